#!/usr/bin/env bash
# The VM end-to-end test of the iwd backend (issue 18): installs what it
# needs (idempotent: only what is missing), builds the binary, and runs
# tests/vm/iwd.sh in a QEMU VM booting Debian's kernel (tests/vm/README.md):
# the real iwd and hostapd access points on mac80211_hwsim radios.
#
#   scripts/test-vm-iwd.sh
#
# Prints `SKIPPED: <reason>` and exits 0 (not counted as passed) when the
# machine cannot run it (no root to install, no kernel, no VM); a failed
# check exits 1.
set -uo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }
skip() { echo "SKIPPED: VM iwd test: $*"; exit 0; }

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
[ -x /usr/libexec/iwd ] || need+=(iwd)
command -v iw >/dev/null 2>&1 || need+=(iw)
command -v jq >/dev/null 2>&1 || need+=(jq)
command -v dbus-daemon >/dev/null 2>&1 || need+=(dbus-daemon)
command -v busctl >/dev/null 2>&1 || need+=(systemd)
command -v modprobe >/dev/null 2>&1 || need+=(kmod)
command -v python3 >/dev/null 2>&1 || need+=(python3 python3-pip)
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO=sudo; else
    skip "missing ${need[*]} and no root to install them"; fi
  log "installing ${need[*]}"
  # The daemons are only run inside the VM: keep apt from starting iwd or
  # hostapd on this machine.
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
log "cargo build"
cargo build -q --bin proxy-wifi || exit 1
# A private copy: a rebuild while the VM runs must not swap the binary.
logroot="$target/vm-logs"
mkdir -p "$logroot"
bin="$(cd "$logroot" && pwd)/proxy-wifi-iwd-vm"
cp "$target/debug/proxy-wifi" "$bin"

# --- the VM ----------------------------------------------------------------------
# iwd needs the kernel's crypto through AF_ALG; Debian builds these as
# modules, loaded here rather than left to on-demand loading in the VM.
crypto=()
for m in algif_hash algif_skcipher cmac ecb des_generic sha512_generic md4 pkcs8_key_parser; do
  crypto+=(--modprobe "$m")
done
log "VM: iwd end to end (tests/vm/iwd.sh)"
start=$(date +%s)
tests/vm/run.sh --name iwd --timeout "${IWD_VM_TIMEOUT:-900}" --modprobe 'mac80211_hwsim radios=4' \
  "${crypto[@]}" --env "PROXY_WIFI_BIN=$bin" tests/vm/iwd.sh
rc=$?
echo "VM iwd test: $(( $(date +%s) - start )) s wall time"
case "$rc" in
  0) exit 0 ;;
  77) exit 0 ;;   # run.sh printed SKIPPED
  *) exit 1 ;;
esac
