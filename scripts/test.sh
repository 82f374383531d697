#!/usr/bin/env bash
# Runs the whole test suite on a fresh Debian 12 machine: installs what the
# tests need, then format, lint, unit, integration and end-to-end tests, and
# the Windows type check and the Windows build under Wine. CI (.ci/run)
# calls exactly this.
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
scripts/everyday.sh
scripts/windows-check.sh
scripts/windows-wine.sh
scripts/test-guest-driver.sh
scripts/test-vm-nm.sh
