#!/usr/bin/env bash
# The VM end-to-end test of the NetworkManager backend (issue 15): installs
# what it needs (idempotent: only what is missing), builds the binary, and
# runs tests/vm/nm.sh in a QEMU VM booting Debian's kernel (tests/vm/README.md).
# About 5 minutes on an idle 2-core machine (TCG), more when loaded.
#
#   scripts/test-vm-nm.sh            # the test
#   NM_BENCH=1 scripts/test-vm-nm.sh --release   # the test plus the benchmark
#
# Prints `SKIPPED: <reason>` and exits 0 when the machine cannot run it (no
# root to install, no kernel); a failed check exits 1.
set -uo pipefail
cd "$(dirname "$0")/.."

profile=debug
[ "${1:-}" = --release ] && profile=release

log() { printf '\n== %s\n' "$*"; }
skip() { echo "SKIPPED: VM NetworkManager test: $*"; exit 0; }

# --- what the VM test needs ---------------------------------------------------
has_kernel() {
  local k
  for k in /boot/vmlinuz-*; do [ -d "/lib/modules/${k#/boot/vmlinuz-}/kernel" ] && return 0; done
  return 1
}
need=()
command -v qemu-system-x86_64 >/dev/null 2>&1 || need+=(qemu-system-x86)
has_kernel || need+=(linux-image-amd64)
command -v busybox >/dev/null 2>&1 || need+=(busybox-static)
command -v hostapd >/dev/null 2>&1 || need+=(hostapd)
command -v wpa_supplicant >/dev/null 2>&1 || need+=(wpasupplicant)
command -v NetworkManager >/dev/null 2>&1 || need+=(network-manager)
command -v iw >/dev/null 2>&1 || need+=(iw)
command -v jq >/dev/null 2>&1 || need+=(jq)
command -v dbus-daemon >/dev/null 2>&1 || need+=(dbus-daemon)
command -v dbus-monitor >/dev/null 2>&1 || need+=(dbus-bin)
command -v modprobe >/dev/null 2>&1 || need+=(kmod)
command -v pgrep >/dev/null 2>&1 || need+=(procps)
command -v python3 >/dev/null 2>&1 || need+=(python3 python3-pip)
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO=sudo; else
    skip "missing ${need[*]} and no root to install them"; fi
  log "installing ${need[*]}"
  # The packages are only run inside the VM: keep apt from starting
  # NetworkManager or hostapd on this machine.
  policy_made=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null && $SUDO chmod +x /usr/sbin/policy-rc.d && policy_made=1
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends "${need[@]}"
  apt_rc=$?
  [ "$policy_made" = 1 ] && $SUDO rm -f /usr/sbin/policy-rc.d
  [ "$apt_rc" = 0 ] || skip "apt-get install ${need[*]} failed"
fi
if ! command -v vng >/dev/null 2>&1; then
  log "installing virtme-ng (pip)"
  python3 -m pip install -q virtme-ng 2>/dev/null ||
    python3 -m pip install -q --break-system-packages virtme-ng ||
    skip "pip install virtme-ng failed"
  hash -r
  command -v vng >/dev/null 2>&1 || export PATH="$HOME/.local/bin:$PATH"
  command -v vng >/dev/null 2>&1 || skip "vng not on PATH after pip install"
fi

# scripts/test.sh runs the apt and pip installs of every VM test first, one
# at a time (they are not safe to run twice at once), then the VM tests in
# the background beside other steps.
if [ "${VM_TEST_PREPARE_ONLY:-0}" = 1 ]; then exit 0; fi

# --- the binary ------------------------------------------------------------------
target="${CARGO_TARGET_DIR:-$PWD/target}"
log "cargo build ($profile)"
if [ "$profile" = release ]; then cargo build -q --release --bin proxy-wifi || exit 1
else cargo build -q --bin proxy-wifi || exit 1; fi
# A private copy: a rebuild while the VM runs must not swap the binary.
logroot="$target/vm-logs"
mkdir -p "$logroot"
bin="$logroot/proxy-wifi-nm-vm"
cp "$target/$profile/proxy-wifi" "$bin"

# --- the VM ----------------------------------------------------------------------
log "VM: NetworkManager end to end (tests/vm/nm.sh)"
start=$(date +%s)
tests/vm/run.sh --name nm --timeout "${NM_VM_TIMEOUT:-1200}" --modprobe 'mac80211_hwsim radios=7' \
  --env "PROXY_WIFI=$bin" --env "NM_BENCH=${NM_BENCH:-0}" tests/vm/nm.sh
rc=$?
echo "VM NetworkManager test: $(( $(date +%s) - start )) s wall time"
case "$rc" in
  0) exit 0 ;;
  77) exit 0 ;;   # run.sh printed SKIPPED
  *) exit 1 ;;
esac
