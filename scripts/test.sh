#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian 12 machine: installs what the
# tests need, then format, lint, unit, integration and end-to-end tests, the
# Debian package, the Windows type check and the Windows build under Wine,
# and the VM tests (the guest driver, NetworkManager and iwd for real). CI
# (.ci/run) calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

# --- system packages the tests need -----------------------------------------
need_pkgs=()
command -v dbus-daemon >/dev/null 2>&1 || need_pkgs+=(dbus-daemon)
/usr/bin/python3 -c 'import dbusmock' >/dev/null 2>&1 || need_pkgs+=(python3-dbusmock)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  log "installing ${need_pkgs[*]}"
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}"
fi

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --all-targets -- -D warnings

log "cargo test"
cargo test --all-targets

log "cargo test --doc"
cargo test --doc

# Each step's duration, to keep the whole under CI's 30 minutes.
timed() {
  local start=$SECONDS rc=0
  "$@" || rc=$?
  printf '== %s took %d s (exit %d)\n' "$1" $((SECONDS - start)) "$rc"
  return "$rc"
}

# The VM tests (TCG) mostly wait on the stacks inside them (scans, link
# timeouts): one VM keeps about half a core busy (measured: qemu at 58 % of
# one core, the machine 71 % idle). So they run in the background, two
# lanes (the NetworkManager one, the longest; the guest driver's then the
# iwd one), while the package and Windows steps build in the foreground.
# Measured on a fresh clone (2 cores, packages present): 19.5 min in all;
# the VM lanes ended 4 min before the foreground (nm 606 s, guest driver +
# iwd 780 s), which they slowed (everyday.sh 541 s instead of 177 s alone).
# Their apt and pip installs come first, one script at a time: apt and pip
# must not run twice at once, and nothing below runs apt beside them.
log "VM tests: installing what they need"
for t in scripts/test-guest-driver.sh scripts/test-vm-iwd.sh scripts/test-vm-nm.sh; do
  VM_TEST_PREPARE_ONLY=1 "$t"
done
# Each line carries its lane's name; a lane's status is its first failure.
lane() {
  local name=$1
  shift
  (for t in "$@"; do timed "$t" || exit $?; done) 2>&1 | sed -u "s/^/[$name] /"
  return "${PIPESTATUS[0]}"
}
log "VM tests start in the background (lines marked [nm] and [driver+iwd])"
vm_start=$SECONDS
lane nm scripts/test-vm-nm.sh &
nm_pid=$!
lane driver+iwd scripts/test-guest-driver.sh scripts/test-vm-iwd.sh &
other_pid=$!
# A failing foreground step ends the run: stop the VM lanes with it.
trap 'kill "$nm_pid" "$other_pid" 2>/dev/null || true' EXIT

timed scripts/everyday.sh
timed scripts/windows-check.sh
timed scripts/windows-wine.sh

log "waiting for the VM tests"
nm_rc=0 other_rc=0
wait "$nm_pid" || nm_rc=$?
wait "$other_pid" || other_rc=$?
trap - EXIT
printf '== VM tests took %d s (nm: exit %d, guest driver + iwd: exit %d)\n' \
  $((SECONDS - vm_start)) "$nm_rc" "$other_rc"
[ "$nm_rc" = 0 ] && [ "$other_rc" = 0 ]
