#!/usr/bin/env bash
# Type-checks the Windows build (x86_64-pc-windows-msvc) on Linux: every
# `cfg(windows)` line (WlanAPI backend, Hyper-V sockets) is compiled by
# rustc's front end, with warnings denied. Nothing is linked and nothing is
# run: this proves the Windows code compiles, not that it works.
#
# The rustup toolchain here has no Windows standard library, so this uses
# Debian's rustc-web/cargo-web with rust-web-src and rebuilds std for the
# target (-Zbuild-std; RUSTC_BOOTSTRAP allows that on a stable compiler).
# It uses its own target directory: $WINDOWS_TARGET_DIR, default
# target-windows (shared with windows-wine.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=x86_64-pc-windows-msvc
DEBIAN_RUSTC=/usr/bin/rustc
DEBIAN_CARGO=/usr/bin/cargo

log() { printf '\n== %s\n' "$*"; }

# One status line per package: without the newline in the format,
# dpkg-query prints the three statuses on one line, the count is never 3,
# and every run re-installs (needing root and the network; issue 20).
have_debian_rust() {
  dpkg-query -W -f='${Status}\n' rustc-web cargo-web rust-web-src 2>/dev/null |
    grep -c '^install ok installed$' | grep -qx 3
}

if ! have_debian_rust; then
  log "installing rustc-web cargo-web rust-web-src (Debian's Rust, with std sources)"
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    rustc-web cargo-web rust-web-src
fi

# rust-web-src must be the sources of this very compiler.
rustc_version=$(dpkg-query -W -f='${Version}' rustc-web)
src_version=$(dpkg-query -W -f='${Version}' rust-web-src)
if [ "$rustc_version" != "$src_version" ]; then
  echo "rustc-web ($rustc_version) and rust-web-src ($src_version) differ" >&2
  exit 1
fi

log "cargo check --target $TARGET --all-targets (Windows type check; nothing is run)"
echo "compiler: $($DEBIAN_RUSTC --version)"
# RUSTC: rustup's cargo may come first in PATH and would pick rustup's rustc.
RUSTC=$DEBIAN_RUSTC RUSTC_BOOTSTRAP=1 RUSTFLAGS="-Dwarnings" \
  CARGO_TARGET_DIR="${WINDOWS_TARGET_DIR:-target-windows}" \
  "$DEBIAN_CARGO" check --locked -Zbuild-std=core,alloc,std --target "$TARGET" --all-targets

cat <<MSG

Windows type check passed: the library, binary, tests, benches and examples,
including every cfg(windows) module (WlanAPI FFI, Hyper-V sockets), compile
for $TARGET with warnings denied. Nothing was linked or run here: the Windows
code paths run under Wine in scripts/windows-wine.sh and on a Windows host
(see docs/windows.md).
MSG
