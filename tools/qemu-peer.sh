#!/usr/bin/env bash
# QEMU 11.1 as a migration peer beside Debian 12's QEMU 7.2: a Debian trixie
# chroot (debootstrap --variant=minbase, about 40 s and 500 MB) with
# qemu-system-x86 from trixie-backports. Idempotent: a ready chroot is reused.
#
#   tools/qemu-peer.sh setup            build the chroot if needed, print QEMU's version
#   tools/qemu-peer.sh run ARGS...      run qemu-system-x86_64 ARGS... inside it
#   tools/qemu-peer.sh version          print the chroot's QEMU version (exit 1 if absent)
#
# The chroot sees /dev, /proc, /sys, /tmp and this project's tree at their own
# paths (bind mounts, made on first use), so file arguments need no rewriting.
# Where: $VMM_QEMU_CHROOT, default /var/lib/vmm-qemu-peer/trixie.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CHROOT=${VMM_QEMU_CHROOT:-/var/lib/vmm-qemu-peer/trixie}
MIRROR=${VMM_DEBIAN_MIRROR:-http://deb.debian.org/debian}
QEMU=/usr/bin/qemu-system-x86_64

die() { echo "qemu-peer: error: $*" >&2; exit 2; }
say() { echo "qemu-peer: $*" >&2; }

ready() { [ -x "$CHROOT$QEMU" ] && [ -f "$CHROOT/.vmm-qemu-peer-ready" ]; }

bind_mounts() {
  local d
  for d in /dev /proc /sys /tmp "$ROOT"; do
    mkdir -p "$CHROOT$d"
    mountpoint -q "$CHROOT$d" || mount --rbind "$d" "$CHROOT$d"
    mount --make-rslave "$CHROOT$d"
  done
}

setup() {
  if ready; then return; fi
  [ "$(id -u)" -eq 0 ] || die "building the chroot needs root (debootstrap, mount)"
  if ! command -v debootstrap >/dev/null; then
    say "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null ||
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null; }
  fi
  local t0=$SECONDS
  if [ ! -x "$CHROOT/usr/bin/apt-get" ]; then
    say "debootstrap --variant=minbase trixie into $CHROOT"
    # Never remove through a bind mount: that would delete the host's /tmp or the project.
    if findmnt -rn -o TARGET | grep -q "^$CHROOT/"; then
      die "$CHROOT is half built but has mounts under it; umount -R them, then run setup again"
    fi
    rm -rf --one-file-system "$CHROOT"
    mkdir -p "$CHROOT"
    debootstrap --variant=minbase trixie "$CHROOT" "$MIRROR" >"$CHROOT.debootstrap.log" 2>&1 ||
      { tail -5 "$CHROOT.debootstrap.log" >&2; die "debootstrap failed; log: $CHROOT.debootstrap.log"; }
  fi
  echo "deb $MIRROR trixie-backports main" >"$CHROOT/etc/apt/sources.list.d/backports.list"
  bind_mounts
  say "installing qemu-system-x86 from trixie-backports"
  chroot "$CHROOT" /usr/bin/env DEBIAN_FRONTEND=noninteractive sh -c \
    'apt-get update -qq && apt-get install -y -qq -t trixie-backports --no-install-recommends qemu-system-x86' \
    >"$CHROOT.apt.log" 2>&1 || { tail -5 "$CHROOT.apt.log" >&2; die "apt-get in the chroot failed; log: $CHROOT.apt.log"; }
  touch "$CHROOT/.vmm-qemu-peer-ready"
  say "ready in $((SECONDS - t0)) s"
}

case "${1:-}" in
  setup)
    setup
    bind_mounts
    chroot "$CHROOT" "$QEMU" --version | head -1
    ;;
  version)
    ready || { echo "qemu-peer: no chroot at $CHROOT (run tools/qemu-peer.sh setup)" >&2; exit 1; }
    bind_mounts
    chroot "$CHROOT" "$QEMU" --version | head -1
    ;;
  run)
    shift
    ready || die "no QEMU chroot at $CHROOT: run tools/qemu-peer.sh setup"
    bind_mounts
    cd /
    exec chroot "$CHROOT" "$QEMU" "$@"
    ;;
  -h|--help|"")
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    [ -n "${1:-}" ] || exit 2
    ;;
  *) die "unknown command '$1' (setup, run, version)" ;;
esac
