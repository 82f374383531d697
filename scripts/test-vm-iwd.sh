#!/usr/bin/env bash
# The iwd backend against the real iwd in a VM (issue 18): installs what the
# VM test needs (idempotent), builds proxy-wifi, then boots Debian's kernel
# under TCG with mac80211_hwsim and runs tests/vm/iwd.sh (see
# tests/vm/README.md). About 3-4 minutes on 2 cores; prints
# `SKIPPED: <reason>` and exits 0 (not counted as passed) when the machine
# cannot run a VM. Exit 1 when a check fails.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
need=()
command -v qemu-system-x86_64 >/dev/null 2>&1 || need+=(qemu-system-x86)
ls /boot/vmlinuz-* >/dev/null 2>&1 || need+=(linux-image-amd64)
[ -x /bin/busybox ] || command -v busybox >/dev/null 2>&1 || need+=(busybox-static)
command -v hostapd >/dev/null 2>&1 || need+=(hostapd)
[ -x /usr/libexec/iwd ] || need+=(iwd)
command -v dbus-daemon >/dev/null 2>&1 || need+=(dbus-daemon)
command -v busctl >/dev/null 2>&1 || need+=(systemd)
if [ "${#need[@]}" -gt 0 ]; then
  echo "== installing ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=900 install -y -qq \
    --no-install-recommends "${need[@]}"
fi
if ! command -v vng >/dev/null 2>&1; then
  echo "== installing virtme-ng"
  pip install -q virtme-ng || python3 -m pip install -q --break-system-packages virtme-ng
fi

cargo build --bin proxy-wifi
target="${CARGO_TARGET_DIR:-target}"
bin="$(cd "$target" && pwd)/debug/proxy-wifi"

set +e
# iwd needs the kernel's crypto through AF_ALG; Debian builds these as
# modules, loaded here rather than left to on-demand loading in the VM.
crypto=()
for m in algif_hash algif_skcipher cmac ecb des_generic sha512_generic md4 pkcs8_key_parser; do
  crypto+=(--modprobe "$m")
done
tests/vm/run.sh --name iwd --timeout 900 --modprobe 'mac80211_hwsim radios=4' "${crypto[@]}" \
  --env "PROXY_WIFI_BIN=$bin" tests/vm/iwd.sh
rc=$?
set -e
case "$rc" in
  0) echo "iwd VM test: PASSED" ;;
  77) echo "iwd VM test: SKIPPED (not counted as passed)"; exit 0 ;;
  *) echo "iwd VM test: FAILED (exit $rc)"; exit 1 ;;
esac
