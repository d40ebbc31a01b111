"""What the lab tools share about this host and the `vmm` processes they start.

source_backend(): the source's RAM is guest_memfd where this KVM offers it
(`vmm caps --check gmem`), shmem where it does not, with one line saying why.
end_destination(): a `vmm receive` never outlives a source that failed; every
destination is also started with --accept-timeout, so that one whose source
never came ends by itself.
"""
import subprocess
import sys

ACCEPT_TIMEOUT = ["--accept-timeout", "60"]


def source_backend(vmm, tool):
    """'gmem' where a guest can run on guest_memfd here, else 'shmem', saying so on stderr."""
    r = subprocess.run([vmm, "caps", "--check", "gmem"], capture_output=True, text=True)
    if r.returncode == 0:
        return "gmem"
    why = r.stdout.strip().partition("not usable here: ")[2] or r.stderr.strip() or "vmm caps exited %d" % r.returncode
    print("%s: the source runs on shmem: %s" % (tool, why), file=sys.stderr)
    return "shmem"


def end_destination(d, src_rc, timeout):
    """Waits for the destination `d` (a Popen) once its source exited with `src_rc`: up to
    `timeout` s while it runs the guest; a source that failed (non-zero) leaves the
    destination nothing to wait for, so it is ended at once. Returns its exit code."""
    if src_rc != 0 and d.poll() is None:
        d.terminate()
        try:
            return d.wait(timeout=5)
        except subprocess.TimeoutExpired:
            d.kill()
    try:
        return d.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        d.kill()
        d.wait()
        return d.returncode
