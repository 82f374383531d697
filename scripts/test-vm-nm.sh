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

# --- what the VM test needs (scripts/lib/vm-test.sh) ----------------------
. scripts/lib/vm-test.sh
vm_need_command wpa_supplicant wpasupplicant
vm_need_command NetworkManager network-manager
vm_need_command dbus-monitor dbus-bin
vm_need_command pgrep procps
vm_prepare

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
vm_run "VM NetworkManager test" --name nm --timeout "${NM_VM_TIMEOUT:-1200}" --modprobe 'mac80211_hwsim radios=7' \
  --env "PROXY_WIFI=$bin" --env "NM_BENCH=${NM_BENCH:-0}" \
  --env "NM_BENCH_ROUNDS=${NM_BENCH_ROUNDS:-10}" --env "NM_BENCH_CONNECTS=${NM_BENCH_CONNECTS:-10}" tests/vm/nm.sh
