#!/usr/bin/env bash
# Installs the Debian packages this project builds and tests with.
# Idempotent: packages already present are skipped, apt-get update runs at most
# once per invocation and only when something is missing.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config
  libboost-dev libspdlog-dev libfmt-dev libcli11-dev nlohmann-json3-dev libssl-dev
  # tools/fuzz.sh: libFuzzer
  clang libclang-rt-14-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  qemu-system-x86 gnuplot-nox
  iproute2 python3
  # tools/kernel-lab: the lab VM's initramfs, and building a lab kernel
  busybox-static cpio flex bison bc libelf-dev
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install-deps: done"
