# iwd scenario (issue 18): `proxy-wifi serve` with the iwd backend against the
# real iwd (Debian's package) and hostapd access points on mac80211_hwsim
# radios, driven by `proxy-wifi guest` over TCP on loopback.
#
# Run by scripts/test-vm-iwd.sh:
#   tests/vm/run.sh --modprobe 'mac80211_hwsim radios=4' \
#     --env PROXY_WIFI_BIN=... tests/vm/iwd.sh
#
# Radios: wlan0 is iwd's station; wlan1 "pw-net" (WPA2-PSK, channel 1),
# wlan2 "open-net" (open, channel 6), wlan3 "hidden-net" (WPA2-PSK, hidden,
# channel 11) are hostapd access points. Every wait polls with a deadline.

BIN="${PROXY_WIFI_BIN:-$VM_REPO/target/debug/proxy-wifi}"
# Work files in the VM's own /tmp: iwd watches its state directory with
# inotify and hostapd wants a local filesystem.
W=/tmp/proxy-wifi-iwd
STATE="$W/iwd-state"
CONF="$W/iwd-conf"
mkdir -p "$W" "$STATE" "$CONF"
chmod 700 "$STATE"
PW_PASS='correct horse'
HIDDEN_PASS='hidden pass'
guest() { "$BIN" guest --tcp 127.0.0.1 --timeout 25 "$@"; }

# --- the radio world ----------------------------------------------------------

ap_conf() { # iface ssid channel [passphrase] [hidden]
  {
    echo "interface=$1"; echo "driver=nl80211"; echo "ssid=$2"
    echo "hw_mode=g"; echo "channel=$3"
    if [ -n "${4:-}" ]; then
      echo "wpa=2"; echo "wpa_key_mgmt=WPA-PSK"; echo "rsn_pairwise=CCMP"
      echo "wpa_passphrase=$4"
    fi
    [ -n "${5:-}" ] && echo "ignore_broadcast_ssid=1"
  } >"$W/hostapd-$1.conf"
}
start_ap() { # iface
  : >"$VM_LOGDIR/hostapd-$1.log"
  # Line-buffered: hostapd writes its log through stdio.
  vm_bg "hostapd-$1" stdbuf -oL -eL hostapd "$W/hostapd-$1.conf"
  vm_wait_until 60 "hostapd beaconing on $1" ap_up "$1"
}
ap_up() { iw dev "$1" info 2>/dev/null | grep -q 'type AP' && iw dev "$1" info | grep -q 'ssid '; }
ap_conf wlan1 pw-net 1 "$PW_PASS"
ap_conf wlan2 open-net 6
ap_conf wlan3 hidden-net 11 "$HIDDEN_PASS" hidden
mac_of() { cat "/sys/class/net/$1/address"; }

cat >"$CONF/main.conf" <<'EOF'
[General]
EnableNetworkConfiguration=false
[DriverQuirks]
DefaultInterface=*
EOF
PHY0=$(cat /sys/class/net/wlan0/phy80211/name)
start_iwd() {
  vm_bg iwd env STATE_DIRECTORY="$STATE" CONFIGURATION_DIRECTORY="$CONF" \
    /usr/libexec/iwd -i wlan0 -p "$PHY0"
  vm_wait_until 180 "iwd on the bus with a station" iwd_station
}

# The object path of iwd's station (prints it): an object /net/connman/iwd/PHY/IFINDEX
# with the Station interface.
iwd_station() {
  local p
  for p in $(busctl --system --list tree net.connman.iwd 2>/dev/null | grep -E '^/net/connman/iwd/[0-9]+/[0-9]+$'); do
    if busctl --system get-property net.connman.iwd "$p" net.connman.iwd.Station State >/dev/null 2>&1; then
      echo "$p"; return 0
    fi
  done
  return 1
}
iwd_state() {
  busctl --system get-property net.connman.iwd "$(iwd_station)" net.connman.iwd.Station State \
    2>/dev/null | tr -d '"' | cut -d' ' -f2
}
iwd_state_is() { [ "$(iwd_state)" = "$1" ]; }

start_serve() { # extra args
  local before
  before=$(vm_log_count serve 'following iwd'); before=${before:-0}
  vm_bg serve env RUST_LOG=proxy_wifi=debug "$BIN" serve --tcp 127.0.0.1 \
    --notify-host-disconnect --iwd-state-dir "$STATE" "$@"
  vm_wait_until 120 "serve follows iwd" serve_sessions_above "$before"
}
serve_sessions_above() { [ "$(vm_log_count serve 'following iwd')" -gt "$1" ]; }
stations_added() { [ "$(vm_log_count serve 'iwd station added')" -ge "$1" ]; }

# --- helpers on the guest's side ----------------------------------------------

scan_has() { # ssid [targeted]
  local out
  out=$(guest --json scan ${2:+--ssid "$2"} 2>/dev/null) || return 1
  printf '%s' "$out" | python3 -c '
import json, sys
want = sys.argv[1]
sys.exit(0 if any(b["ssid"] == want for b in json.load(sys.stdin)) else 1)' "$1"
}
bss_of() { # ssid [targeted]: prints "bssid freq_mhz" of the SSID
  guest --json scan ${2:+--ssid "$2"} 2>/dev/null | python3 -c '
import json, sys
for b in json.load(sys.stdin):
    if b["ssid"] == sys.argv[1]:
        print(b["bssid"], b["freq_mhz"]); break' "$1"
}
# connect ssid [guest connect args...]: prints the JSON line; status 0 on success
connect() {
  local ssid="$1"; shift
  local out
  out=$(guest --json connect "$@" "$ssid" 2>&1)
  printf '%s' "$out" | tr -d '\n' >"$W/last-connect"
  grep -q '"success": *true' "$W/last-connect"
}
session() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["session_id"])' "$W/last-connect"; }
connected_bssid() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["bssid"])' "$W/last-connect"; }
file_mode() { stat -c %a "$1"; }
not() { ! "$@"; }
scan_has_both() { # one scan answer holding both
  local out
  out=$(guest --json scan 2>/dev/null) || return 1
  printf '%s' "$out" | python3 -c '
import json, sys
seen = {b["ssid"] for b in json.load(sys.stdin)}
sys.exit(0 if {"pw-net", "open-net"} <= seen else 1)'
}
open_done() { [ ! -e "$STATE/open-net.open" ] && iwd_state_is disconnected; }

# --- setup --------------------------------------------------------------------

# No D-Bus activation of iwd: a call to net.connman.iwd while our iwd is
# not (yet, or no longer) on the bus would start a second iwd without -i/-p,
# which takes every radio, the access points' included. The VM's /usr is a
# throw-away overlay.
rm -f /usr/share/dbus-1/system-services/net.connman.iwd.service
vm_check system-bus vm_start_system_bus || return 0
for i in wlan1 wlan2 wlan3; do start_ap "$i" || { vm_fail "ap-$i" "hostapd did not start"; return 0; }; done
vm_pass access-points "pw-net $(mac_of wlan1), open-net $(mac_of wlan2), hidden-net $(mac_of wlan3)"
t0=$(vm_now_ms)
start_iwd || { vm_fail iwd-start "iwd did not come up: $(busctl --system --list tree net.connman.iwd 2>&1 | tr '\n' ' '); $(ip -br link show wlan0); iwd $(vm_running iwd && echo alive || echo exited), log: $(tail -3 "$VM_LOGDIR/iwd.log")"; return 0; }
vm_metric iwd_start_ms $(( $(vm_now_ms) - t0 )) ms

# The Linux default picks iwd (no NetworkManager here) and says so.
start_serve || { vm_fail serve-start "$(tail -5 "$VM_LOGDIR/serve.log")"; return 0; }
vm_expect default-backend-is-iwd "$(grep -m1 picked "$VM_LOGDIR/serve.log")" \
  vm_log_has serve 'picked the iwd backend: iwd manages 1 Wi-Fi station'

# --- scan ---------------------------------------------------------------------

t0=$(vm_now_ms)
if vm_wait_until 90 "pw-net and open-net in a guest scan" \
    scan_has_both; then
  vm_metric scan_visible_ms $(( $(vm_now_ms) - t0 )) ms
  read -r bssid freq < <(bss_of pw-net)
  vm_expect scan-pw-net-bss "bssid $bssid freq $freq, want $(mac_of wlan1) 2412" \
    test "$bssid $freq" = "$(mac_of wlan1) 2412"
  read -r bssid freq < <(bss_of open-net)
  vm_expect scan-open-net-bss "bssid $bssid freq $freq" test "$bssid $freq" = "$(mac_of wlan2) 2437"
  vm_expect scan-hidden-not-listed "hidden-net listed untargeted" not scan_has hidden-net
else
  vm_fail scan "no pw-net/open-net: $(guest scan 2>&1 | tail -5)"
fi

# --- WPA2 with the PMK --------------------------------------------------------

PMK=$(python3 -c 'import hashlib,sys; print(hashlib.pbkdf2_hmac("sha1", sys.argv[1].encode(), b"pw-net", 4096, 32).hex())' "$PW_PASS")
t0=$(vm_now_ms)
if connect pw-net --passphrase "$PW_PASS"; then
  vm_metric connect_wpa2_ms $(( $(vm_now_ms) - t0 )) ms
  vm_expect wpa2-connect-bssid "$(connected_bssid)" test "$(connected_bssid)" = "$(mac_of wlan1)"
  vm_expect wpa2-iwd-connected "state $(iwd_state)" vm_wait_until 10 "iwd connected" iwd_state_is connected
  f="$STATE/pw-net.psk"
  vm_expect wpa2-file-private "mode $(file_mode "$f" 2>&1)" test "$(file_mode "$f")" = 600
  vm_expect wpa2-file-marked-pmk-only "$(grep -c . "$f") lines" \
    bash -c "head -1 '$f' | grep -q '^# proxy-wifi' && grep -q 'PreSharedKey=$PMK' '$f' && grep -q 'AutoConnect=false' '$f' && ! grep -q Passphrase '$f'"
  # --- disconnect ---
  guest disconnect "$(session)" >/dev/null 2>&1
  vm_expect disconnect-iwd "state $(iwd_state)" vm_wait_until 10 "iwd disconnected" iwd_state_is disconnected
  vm_expect disconnect-file-removed "$(ls "$STATE")" vm_wait_until 5 "file removed" test ! -e "$f"
else
  vm_fail wpa2-connect "$(cat "$W/last-connect")"
fi

# --- wrong key ----------------------------------------------------------------

t0=$(vm_now_ms)
if connect pw-net --passphrase 'wrong horse'; then
  vm_fail wrong-key "connected with a wrong key"
else
  vm_metric wrong_key_fail_ms $(( $(vm_now_ms) - t0 )) ms
  vm_pass wrong-key "$(cut -c1-160 "$W/last-connect")"
fi
vm_expect wrong-key-no-file "$(ls "$STATE")" vm_wait_until 5 "no file" test ! -e "$STATE/pw-net.psk"
vm_expect wrong-key-iwd-idle "state $(iwd_state)" vm_wait_until 10 "iwd disconnected" iwd_state_is disconnected

# --- open ---------------------------------------------------------------------

if connect open-net; then
  vm_expect open-connect-bssid "$(connected_bssid)" test "$(connected_bssid)" = "$(mac_of wlan2)"
  vm_expect open-file "$(ls "$STATE")" bash -c "head -1 '$STATE/open-net.open' | grep -q '^# proxy-wifi'"
  guest disconnect "$(session)" >/dev/null 2>&1
  vm_expect open-disconnect "state $(iwd_state), files: $(ls "$STATE")" \
    vm_wait_until 10 "disconnected, file gone" open_done
else
  vm_fail open-connect "$(cat "$W/last-connect")"
fi

# --- hidden -------------------------------------------------------------------

if vm_wait_until 30 "hidden-net in a targeted scan" \
    scan_has hidden-net hidden-net; then
  vm_pass hidden-targeted-scan "$(bss_of hidden-net hidden-net)"
else
  vm_fail hidden-targeted-scan "$(guest scan --ssid hidden-net 2>&1 | tail -3)"
fi
t0=$(vm_now_ms)
if vm_retry 2 "hidden connect" connect hidden-net --passphrase "$HIDDEN_PASS"; then
  vm_metric connect_hidden_ms $(( $(vm_now_ms) - t0 )) ms
  vm_expect hidden-connect-bssid "$(connected_bssid)" test "$(connected_bssid)" = "$(mac_of wlan3)"
  guest disconnect "$(session)" >/dev/null 2>&1
  vm_expect hidden-file-removed "$(ls "$STATE")" vm_wait_until 10 "file gone" test ! -e "$STATE/hidden-net.psk"
else
  vm_fail hidden-connect "$(cat "$W/last-connect")"
fi
vm_wait_until 10 "iwd disconnected" iwd_state_is disconnected

# --- AP loss: NOTIF_DISCONNECTED ----------------------------------------------

: >"$VM_LOGDIR/watch.log"
vm_bg watch "$BIN" guest --tcp 127.0.0.1 --json watch
vm_wait_until 10 "watch listening" vm_log_has watch 'listening'
if connect pw-net --passphrase "$PW_PASS"; then
  vm_wait_until 10 "iwd connected" iwd_state_is connected
  t0=$(vm_now_ms)
  vm_stop hostapd-wlan1 TERM 10
  if vm_wait_until 20 "NOTIF_DISCONNECTED at the guest" vm_log_has watch '"type":"disconnected"'; then
    vm_metric ap_loss_notif_ms $(( $(vm_now_ms) - t0 )) ms
    vm_pass ap-loss-notif-disconnected "$(grep -m1 -i disconnect "$VM_LOGDIR/watch.log" | cut -c1-120)"
  else
    vm_fail ap-loss-notif-disconnected "watch: $(tail -3 "$VM_LOGDIR/watch.log")"
  fi
  vm_expect ap-loss-file-removed "$(ls "$STATE")" vm_wait_until 10 "file gone" test ! -e "$STATE/pw-net.psk"
else
  vm_fail ap-loss-connect "$(cat "$W/last-connect")"
fi
start_ap wlan1 || vm_fail ap-restart "hostapd wlan1 did not restart"

# --- mirror: the host's own connection ----------------------------------------

st=$(iwd_station)
hex() { printf %s "$1" | od -An -tx1 | tr -d ' \n'; }
open_path="$st/$(hex open-net)_open"
if [ -n "$open_path" ] && busctl --system call net.connman.iwd "$open_path" net.connman.iwd.Network Connect 2>"$W/host-connect.err" &&
    vm_wait_until 10 "host connected" iwd_state_is connected; then
  host_file="$STATE/open-net.open"
  before=$(cat "$host_file" 2>/dev/null; echo "exists=$?")
  if connect open-net; then
    vm_expect mirror-logged "$(grep -m1 -i mirror "$VM_LOGDIR/serve.log" | cut -c1-160)" \
      vm_log_has serve 'mirroring the host'
    guest disconnect "$(session)" >/dev/null 2>&1
    vm_wait_until 3 "guest disconnect handled" vm_log_has serve 'guest left a mirrored connection'
    vm_expect mirror-host-stays "state $(iwd_state)" iwd_state_is connected
    vm_expect mirror-host-file-untouched "$before" test "$(cat "$host_file" 2>/dev/null; echo "exists=$?")" = "$before"
  else
    vm_fail mirror-connect "$(cat "$W/last-connect")"
  fi
  busctl --system call net.connman.iwd "$st" net.connman.iwd.Station Disconnect >/dev/null 2>&1
  vm_wait_until 10 "host disconnected" iwd_state_is disconnected
  # The host forgets open-net again, so iwd does not autoconnect to it later.
  busctl --system call net.connman.iwd "/net/connman/iwd/$(hex open-net)_open" \
    net.connman.iwd.KnownNetwork Forget >/dev/null 2>&1 || true
else
  vm_fail mirror-host-connect "no host connection to open-net: $(cat "$W/host-connect.err" 2>/dev/null)"
fi

# --- iwd restarting -------------------------------------------------------------

if vm_retry 2 "pw-net connect" connect pw-net --passphrase "$PW_PASS"; then
  : >"$VM_LOGDIR/watch.log"
  t0=$(vm_now_ms)
  vm_stop iwd TERM 10
  vm_expect iwd-gone-logged "$(tail -2 "$VM_LOGDIR/serve.log" | cut -c1-160)" \
    vm_wait_until 10 "serve saw iwd go" vm_log_has serve 'iwd went away'
  vm_expect iwd-gone-file-removed "$(ls "$STATE")" vm_wait_until 10 "file gone" test ! -e "$STATE/pw-net.psk"
  vm_expect iwd-gone-notif-disconnected "$(tail -2 "$VM_LOGDIR/watch.log")" \
    vm_wait_until 10 "NOTIF_DISCONNECTED" vm_log_has watch '"type":"disconnected"'
  start_iwd
  vm_expect iwd-back "$(grep -c 'iwd station added' "$VM_LOGDIR/serve.log") station arrivals" \
    vm_wait_until 20 "station back in serve" stations_added 2
  vm_metric iwd_restart_to_station_ms $(( $(vm_now_ms) - t0 )) ms
  vm_wait_until 40 "pw-net visible again" scan_has pw-net
  if vm_retry 2 "connect after restart" connect pw-net --passphrase "$PW_PASS"; then
    vm_pass iwd-restart-connect "$(connected_bssid)"
  else
    vm_fail iwd-restart-connect "$(cat "$W/last-connect")"
  fi
else
  vm_fail iwd-restart-connect-before "$(cat "$W/last-connect")"
fi

# --- SIGTERM cleanup --------------------------------------------------------------

vm_wait_until 10 "iwd connected" iwd_state_is connected
vm_expect sigterm-file-present "$(ls "$STATE")" test -e "$STATE/pw-net.psk"
if vm_stop serve TERM 15; then vm_pass sigterm-exit; else vm_fail sigterm-exit "needed SIGKILL"; fi
vm_expect sigterm-file-removed "$(ls "$STATE")" test ! -e "$STATE/pw-net.psk"
vm_expect sigterm-iwd-disconnected "state $(iwd_state)" vm_wait_until 10 "iwd disconnected" iwd_state_is disconnected

# A crash leaves a file: the next start removes it, and only it.
printf '# proxy-wifi: provisioned for a guest; removed when the guest leaves. Do not edit.\n[Settings]\nAutoConnect=false\n' >"$STATE/crashed.open"
printf '[Settings]\nAutoConnect=false\n' >"$STATE/host-own.open"
start_serve --backend iwd
vm_expect serve-backend-iwd "$(grep starting "$VM_LOGDIR/serve.log" | tail -1 | cut -c1-160)" \
  vm_log_has serve 'starting backend="iwd"'
vm_expect crash-leftover-removed "$(ls "$STATE")" vm_wait_until 10 "leftover gone" test ! -e "$STATE/crashed.open"
vm_expect host-file-kept "$(ls "$STATE")" test -e "$STATE/host-own.open"
vm_stop serve TERM 15

# --- the key never reaches a log ------------------------------------------------

vm_expect no-key-in-logs "PMK or passphrase found in logs" \
  bash -c "! grep -rqiF -e '$PMK' -e '$PW_PASS' -e '$HIDDEN_PASS' '$VM_LOGDIR'/serve.log '$VM_LOGDIR'/watch.log"
vm_stop watch TERM 5 || true
