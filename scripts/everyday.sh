#!/usr/bin/env bash
# Everyday-use checks (issue 20): the manifest (rust-version, unused
# dependencies, license) and the Debian package (build, install with dpkg,
# files, `systemd-analyze verify`, purge). Installs what it needs
# (cargo-deb, systemd's analyzer) when missing. Run as root (dpkg).
#   scripts/everyday.sh            # everything
#   scripts/everyday.sh manifest   # one part: manifest | shells | vsock | deb
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== everyday: %s\n' "$*"; }

manifest() {
  log "manifest: rust-version, unused dependencies, license"
  python3 scripts/check-manifest.py
}

# The completion scripts are syntax-checked by their shells
# (tests/cli_everyday.rs); install zsh and fish so that check runs.
shells() {
  local need=()
  command -v zsh >/dev/null 2>&1 || need+=(zsh)
  command -v fish >/dev/null 2>&1 || need+=(fish)
  if [ "${#need[@]}" -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
      echo "SKIPPED: completion syntax checks for ${need[*]}: not root, cannot install them"
      return 0
    fi
    log "installing ${need[*]}"
    apt-get -o DPkg::Lock::Timeout=900 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends "${need[@]}"
  fi
  log "completions parsed by bash, zsh and fish"
  cargo test --test cli_everyday completions -- --nocapture
}

# True when the ELF file has no .debug_* or .symtab section (read from the
# section headers: the string ".debug_info" also sits in std's own code).
no_debug_sections() {
  python3 - "$1" <<'PY'
import struct, sys
data = open(sys.argv[1], "rb").read()
assert data[:4] == b"\x7fELF" and data[4] == 2, "not a 64-bit ELF file"
end = "<" if data[5] == 1 else ">"
shoff, = struct.unpack_from(end + "Q", data, 0x28)
shentsize, shnum, shstrndx = struct.unpack_from(end + "HHH", data, 0x3A)
def header(i):
    return struct.unpack_from(end + "IIQQQQIIQQ", data, shoff + i * shentsize)
strtab = header(shstrndx)
names = []
for i in range(shnum):
    name_off = header(i)[0]
    start = strtab[4] + name_off
    names.append(data[start:data.index(b"\0", start)].decode())
# .debug_gdb_scripts is loaded (allocated) and stays in stripped binaries.
bad = [n for n in names if n in (".debug_info", ".debug_line", ".symtab")]
print("debug sections:", " ".join(bad) if bad else "none")
sys.exit(1 if bad else 0)
PY
}

target_dir() {
  cargo metadata --format-version 1 --no-deps \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])'
}

# Builds the Debian package with cargo-deb, installs it with dpkg, checks the
# installed files, the user, the example configuration and the unit
# (systemd-analyze verify), then purges it and checks nothing is left.
deb() {
  if [ "$(id -u)" != 0 ]; then
    echo "SKIPPED: Debian package test: needs root (dpkg -i)"
    return 0
  fi
  if dpkg-query -W -f='${Status}' proxy-wifi 2>/dev/null | grep -q 'ok installed'; then
    echo "SKIPPED: Debian package test: a proxy-wifi package is already installed here; not replacing it"
    return 0
  fi
  local need=()
  # systemd-analyze verify works without systemd as PID 1 (checked on a
  # container whose PID 1 is not systemd); it comes with the systemd package.
  command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
  command -v man >/dev/null 2>&1 || need+=(man-db)
  if [ "${#need[@]}" -gt 0 ]; then
    log "installing ${need[*]}"
    apt-get -o DPkg::Lock::Timeout=900 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends "${need[@]}"
  fi
  if ! command -v cargo-deb >/dev/null 2>&1; then
    log "installing cargo-deb from crates.io"
    cargo install cargo-deb --locked
  fi

  log "deb: release build and generated assets"
  cargo build --release --locked
  local target assets
  target=$(target_dir)
  assets="$target/release/deb-assets"
  rm -rf "$assets"
  mkdir -p "$assets/man"
  "$target/release/proxy-wifi" man "$assets/man"
  "$target/release/proxy-wifi" completions bash >"$assets/proxy-wifi.bash"
  "$target/release/proxy-wifi" completions zsh >"$assets/_proxy-wifi"
  "$target/release/proxy-wifi" completions fish >"$assets/proxy-wifi.fish"
  sed 's|/usr/local/bin/proxy-wifi|/usr/bin/proxy-wifi|g; s|^# systemd unit for the proxy-wifi daemon.*|# systemd unit for the proxy-wifi daemon (Debian package).|' \
    contrib/proxy-wifi.service >"$assets/proxy-wifi.service"

  log "deb: cargo deb"
  local deb_file
  deb_file=$(cargo deb --no-build --output "$target/debian/" | tail -n1)
  echo "built $deb_file ($(du -h "$deb_file" | cut -f1))"

  log "deb: install with dpkg"
  # Purge whatever happens below, so a failed check leaves no package.
  trap 'dpkg --purge proxy-wifi >/dev/null 2>&1 || true' RETURN EXIT
  dpkg -i "$deb_file"
  local fail=0
  check() { if "$@"; then echo "ok: $*"; else echo "FAIL: $*"; fail=1; fi; }
  for f in /usr/bin/proxy-wifi \
           /usr/lib/systemd/system/proxy-wifi.service \
           /usr/lib/sysusers.d/proxy-wifi.conf \
           /usr/share/polkit-1/rules.d/50-proxy-wifi.rules \
           /usr/share/proxy-wifi/libvirt-hook-qemu \
           /etc/proxy-wifi/config.toml \
           /usr/share/bash-completion/completions/proxy-wifi \
           /usr/share/zsh/vendor-completions/_proxy-wifi \
           /usr/share/fish/vendor_completions.d/proxy-wifi.fish \
           /usr/share/doc/proxy-wifi/copyright; do
    check test -s "$f"
  done
  for page in proxy-wifi proxy-wifi-serve proxy-wifi-guest proxy-wifi-guest-scan proxy-wifi-ctl proxy-wifi-ctl-reload proxy-wifi-ctl-add-guest; do
    check test -n "$(ls /usr/share/man/man1/"$page".1* 2>/dev/null)"
  done
  check sh -c 'man -P cat proxy-wifi-serve 2>/dev/null | grep -q -- "--check-config"'
  check sh -c 'dpkg-query -W -f="\${Conffiles}" proxy-wifi | grep -q /etc/proxy-wifi/config.toml'
  # Stripped: no debug sections, a few MB rather than tens.
  local size
  size=$(stat -c %s /usr/bin/proxy-wifi)
  echo "installed binary: $size bytes"
  check test "$size" -lt 20000000
  check no_debug_sections /usr/bin/proxy-wifi
  check sh -c '/usr/bin/proxy-wifi --version | grep -q "^proxy-wifi "'
  check /usr/bin/proxy-wifi serve --check-config /etc/proxy-wifi/config.toml
  if command -v systemd-sysusers >/dev/null 2>&1; then
    check getent passwd proxy-wifi
  fi
  log "deb: systemd-analyze verify"
  local verify
  verify=$(systemd-analyze verify /usr/lib/systemd/system/proxy-wifi.service 2>&1) || { echo "$verify"; fail=1; }
  # Warnings (unknown keys, bad values) go to stderr with exit status 0.
  if [ -n "$verify" ]; then echo "FAIL: systemd-analyze verify said:"; echo "$verify"; fail=1; else echo "ok: systemd-analyze verify: no findings"; fi

  log "deb: purge"
  dpkg --purge proxy-wifi
  trap - RETURN EXIT
  for f in /usr/bin/proxy-wifi /usr/lib/systemd/system/proxy-wifi.service /etc/proxy-wifi/config.toml /usr/share/man/man1/proxy-wifi.1 /usr/share/man/man1/proxy-wifi.1.gz; do
    check test ! -e "$f"
  done
  if [ "$fail" != 0 ]; then
    echo "FAIL: Debian package checks" >&2
    return 1
  fi
  echo "Debian package: built, installed, checked, purged"
}

# The AF_VSOCK end-to-end test is #[ignore]d (a machine without vsock
# loopback must not count it as passed); run it where loopback exists.
vsock() {
  local builtin="/lib/modules/$(uname -r)/modules.builtin"
  if [ -d /sys/module/vsock_loopback ] || modprobe vsock_loopback 2>/dev/null \
     || grep -qs vsock_loopback "$builtin"; then
    log "AF_VSOCK end to end over vsock loopback"
    cargo test --test transport_vsock -- --ignored end_to_end_over_vsock_loopback
  else
    echo "SKIPPED: AF_VSOCK end-to-end test on this host (its kernel has no vsock_loopback module); scripts/test-guest-driver.sh runs it inside its VM"
  fi
}

if [ $# -eq 0 ]; then set -- manifest shells vsock deb; fi
for part in "$@"; do
  case "$part" in
    manifest) manifest ;;
    shells) shells ;;
    vsock) vsock ;;
    deb) deb ;;
    *) echo "unknown part $part (manifest shells vsock deb)" >&2; exit 2 ;;
  esac
done
