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

# --- what the VM test needs (scripts/lib/vm-test.sh) ----------------------
. scripts/lib/vm-test.sh
vm_need_file /usr/libexec/iwd iwd
vm_need_command busctl systemd
vm_prepare

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
vm_run "VM iwd test" --name iwd --timeout "${IWD_VM_TIMEOUT:-900}" --modprobe 'mac80211_hwsim radios=4' \
  "${crypto[@]}" --env "PROXY_WIFI_BIN=$bin" tests/vm/iwd.sh
