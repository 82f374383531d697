#!/usr/bin/env bash
# Issue 13's end-to-end tests (iw connect auth type 8, WPA3-SAE, shared key
# refused, connecting again to a guest-directed network, notifications
# surviving a 3 s VM pause) with the simulated and NetworkManager backends,
# and the WlanAPI scripted double through the handler. About 5 s once built.
# Needs dbus-daemon and python3-dbusmock for the NetworkManager part
# (installed here when missing; without them that test prints SKIPPED).
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v dbus-daemon >/dev/null 2>&1 || need_pkgs+=(dbus-daemon)
/usr/bin/python3 -c 'import dbusmock' >/dev/null 2>&1 || need_pkgs+=(python3-dbusmock)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}"
fi

cargo test --test guest_behaviour --test guest_behaviour_nm
cargo test --lib wlanapi::backend::tests::guest_auth_types_and_connecting_again_through_the_handler
