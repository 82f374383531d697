# Scenario (issue 15): `proxy-wifi serve --backend networkmanager` against the
# real NetworkManager + wpa_supplicant + hostapd on mac80211_hwsim radios.
# Sourced inside the VM by tests/vm/guest-main.sh (see README.md); run it with
# scripts/test-vm-nm.sh. Needs PROXY_WIFI (the binary, via --env).
#
# Radios: wlan0 is the host's station (managed by NetworkManager); wlan1-5
# are access points (unmanaged); wlan6 is a spare unmanaged radio that the
# scenario hands to NetworkManager to check that the proxy picks it up.
# Every AP hands out addresses inside the VM (busybox udhcpd); the VM has
# no network device to the outside.

: "${PROXY_WIFI:?PROXY_WIFI must name the proxy-wifi binary}"
RUN=/run/pwt
mkdir -p "$RUN"
PASS_WPA2='correct-horse-1'
PASS_HIDDEN='hidden-pass-1'
PASS_MIXED='mixed-pass-1'
NM_WAIT=90          # NetworkManager state changes
SCAN_WAIT=15        # one hwsim scan is ~4 s under TCG
# The handler's per-interface connect bound (default 10 s): under TCG on a
# loaded machine, a connect that needs a fresh wpa_supplicant scan (a switch,
# after a failure) was seen to take 11-13 s, every D-Bus call being slow.
# The guest waits 20 s; 17 s stays inside the handler's 18 s budget.
CONNECT_TIMEOUT_MS="${CONNECT_TIMEOUT_MS:-17000}"

# --- the access points -----------------------------------------------------

# ap IFACE NUM SSID CHANNEL SECURITY [hidden]
ap() {
  local ifc="$1" num="$2" ssid="$3" ch="$4" sec="$5" hidden="${6:-}"
  {
    echo "interface=$ifc"; echo "driver=nl80211"; echo "ctrl_interface=$RUN/hostapd"
    echo "ssid=$ssid"; echo "hw_mode=g"; echo "channel=$ch"
    [ -n "$hidden" ] && echo "ignore_broadcast_ssid=1"
    case "$sec" in
      open) ;;
      wpa2:*) echo "wpa=2"; echo "wpa_key_mgmt=WPA-PSK"; echo "rsn_pairwise=CCMP"
              echo "wpa_passphrase=${sec#wpa2:}" ;;
      mixed:*) echo "wpa=2"; echo "wpa_key_mgmt=WPA-PSK SAE"; echo "rsn_pairwise=CCMP"
               echo "ieee80211w=1"; echo "wpa_passphrase=${sec#mixed:}"; echo "sae_password=${sec#mixed:}" ;;
    esac
  } >"$RUN/hostapd-$ifc.conf"
  {
    echo "interface $ifc"; echo "start 10.0.$num.100"; echo "end 10.0.$num.150"
    echo "lease_file $RUN/udhcpd-$ifc.leases"; echo "pidfile $RUN/udhcpd-$ifc.pid"
    echo "option subnet 255.255.255.0"; echo "option lease 3600"
  } >"$RUN/udhcpd-$ifc.conf"
  : >"$RUN/udhcpd-$ifc.leases"
  ip addr add "10.0.$num.1/24" dev "$ifc"
  vm_bg "udhcpd-$ifc" busybox udhcpd -f "$RUN/udhcpd-$ifc.conf"
  start_ap "$ifc"
}

# start_ap IFACE: (re)starts hostapd; wait_ap IFACE waits until it beacons.
start_ap() { vm_bg "hostapd-$1" hostapd -t "$RUN/hostapd-$1.conf"; }
wait_ap() { vm_wait_until 60 "AP on $1 enabled" vm_log_has "hostapd-$1" 'AP-ENABLED'; }

# --- NetworkManager --------------------------------------------------------

start_nm() {
  vm_bg NetworkManager NetworkManager --debug --config "$RUN/nm/NetworkManager.conf" \
    --config-dir "$RUN/nm/conf.d" --state-file "$RUN/nm/state" --pid-file "$RUN/nm/pid"
  vm_wait_until "$NM_WAIT" "NetworkManager on the bus" nmcli -t general status &&
    vm_wait_until "$NM_WAIT" "wlan6 known" bash -c "nmcli -t -f DEVICE dev | grep -qx wlan6" &&
    nmcli dev set wlan6 managed no &&
    vm_wait_until "$NM_WAIT" "wlan6 unmanaged" bash -c "nmcli -t -f DEVICE,STATE dev | grep -qx 'wlan6:unmanaged'" &&
    vm_wait_until "$NM_WAIT" "wlan0 disconnected" wlan0_state_is disconnected
}

setup_nm() {
  mkdir -p "$RUN/nm/conf.d" "$RUN/nm/connections"
  local unmanaged="interface-name:hwsim0"
  # wlan6 is left out: NetworkManager 1.42 keeps a device listed here
  # unmanaged even after `nmcli dev set IFACE managed yes`; start_nm makes it
  # unmanaged at run time instead, which that command can undo.
  local i; for i in 1 2 3 4 5; do unmanaged="$unmanaged;interface-name:wlan$i"; done
  cat >"$RUN/nm/NetworkManager.conf" <<CONF
[main]
plugins=keyfile
dhcp=internal
no-auto-default=*
auth-polkit=false
[keyfile]
path=$RUN/nm/connections
unmanaged-devices=$unmanaged
[device]
wifi.scan-rand-mac-address=no
[connectivity]
enabled=false
[logging]
level=INFO
domains=DEFAULT,SUPPLICANT:DEBUG,WIFI:DEBUG,WIFI_SCAN:DEBUG
CONF
  # wpa_supplicant is D-Bus activated by systemd on a real host; start it.
  vm_bg wpa_supplicant wpa_supplicant -u -t
  vm_wait_until 20 "wpa_supplicant on the bus" \
    dbus-send --system --print-reply --dest=fi.w1.wpa_supplicant1 /fi/w1/wpa_supplicant1 \
      org.freedesktop.DBus.Properties.Get string:fi.w1.wpa_supplicant1 string:Interfaces || return 1
  start_nm
}

wlan0_state_is() { nmcli -t -f DEVICE,STATE dev | grep -qx "wlan0:$1"; }
wlan0_connected_to() { nmcli -t -f GENERAL.STATE,GENERAL.CONNECTION dev show wlan0 | grep -q "^GENERAL.STATE:100" &&
  iw dev wlan0 link | grep -q "SSID: $1\$"; }
proxy_profiles() { nmcli -t -f NAME con show | grep -c '^proxy-wifi-' || true; }
no_proxy_profile() { [ "$(proxy_profiles)" = 0 ]; }

# --- the proxy and its guest -----------------------------------------------

start_proxy() {
  vm_bg proxy env RUST_LOG="${PROXY_LOG:-proxy_wifi=debug,info}" "$PROXY_WIFI" serve --backend networkmanager \
    --tcp 127.0.0.1 --notify-host-disconnect --scan-min-latency-ms 0 --connect-timeout-ms "$CONNECT_TIMEOUT_MS" \
    --control "$RUN/control.sock"
  vm_wait_until 120 "proxy follows NetworkManager" vm_log_has proxy 'following NetworkManager'
}

pw() { "$PROXY_WIFI" guest --tcp 127.0.0.1 --json "$@"; }
# backend_state_is STATE: `ctl status --json` reports the backend's health as STATE.
backend_state_is() {
  "$PROXY_WIFI" ctl --control "$RUN/control.sock" status --json 2>/dev/null | jq -e --arg s "$1" '.[0].backend.state == $s' >/dev/null
}

# guest_scan_json [--ssid S]: one guest scan; the JSON array on stdout.
guest_scan_json() { pw scan "$@" 2>>"$VM_LOGDIR/guest-cli.log"; }

# scan_has SSID [jq-condition]: a fresh guest scan lists SSID (matching the
# condition). Retries: a hwsim scan may miss a beacon.
scan_has() {
  local ssid="$1" cond="${2:-true}"
  guest_scan_json | jq -e --arg s "$ssid" "any(.[]; .ssid == \$s and ($cond))" >/dev/null
}

# connect SSID [PASSPHRASE] [extra args]: prints the JSON reply.
guest_connect() {
  local ssid="$1" pass="${2:-}"; shift 2 || shift $#
  if [ -n "$pass" ]; then
    printf '%s\n' "$pass" | pw connect "$ssid" --passphrase - "$@" 2>>"$VM_LOGDIR/guest-cli.log"
  else
    pw connect "$ssid" "$@" 2>>"$VM_LOGDIR/guest-cli.log"
  fi
}

json_field() { jq -r ".$1" 2>/dev/null; }

# ===========================================================================
vm_log "setting up access points"
ap wlan1 1 pw-wpa2 1 "wpa2:$PASS_WPA2"
ap wlan2 2 pw-open 6 open
ap wlan3 3 pw-hidden 11 "wpa2:$PASS_HIDDEN" hidden
ap wlan4 4 pw-mixed 3 "mixed:$PASS_MIXED"
ap wlan5 5 pw-hidden2 9 "wpa2:$PASS_HIDDEN" hidden
vm_check system-bus vm_start_system_bus || return 1
setup_nm || { vm_fail setup "NetworkManager did not come up"; return 1; }
for i in 1 2 3 4 5; do wait_ap "wlan$i" || { vm_fail setup "hostapd on wlan$i did not start"; return 1; }; done
vm_pass stack-up "NetworkManager $(NetworkManager --version), $(wpa_supplicant -v | head -1), $(hostapd -v 2>&1 | head -1)"
start_proxy || { vm_fail proxy-start "the proxy did not follow NetworkManager"; return 1; }
vm_bg watch "$PROXY_WIFI" guest --tcp 127.0.0.1 --json watch

# --- scan ------------------------------------------------------------------
if vm_wait_until 60 "guest scan lists pw-wpa2, pw-open, pw-mixed" bash -c \
   "$(declare -f pw guest_scan_json); PROXY_WIFI=$PROXY_WIFI VM_LOGDIR=$VM_LOGDIR; guest_scan_json | jq -e '[.[].ssid] | index(\"pw-wpa2\") and index(\"pw-open\") and index(\"pw-mixed\")'"; then
  scan=$(guest_scan_json); echo "$scan" | jq -c '.[]' >"$VM_LOGDIR/scan-first.json"
  bssid1=$(cat /sys/class/net/wlan1/address)
  vm_expect scan-wpa2 "$(echo "$scan" | jq -c '.[] | select(.ssid=="pw-wpa2")')" \
    jq -e --arg b "$bssid1" 'any(.[]; .ssid=="pw-wpa2" and .security=="WPA2-PSK" and .freq_mhz==2412 and .bssid==$b and .rssi_dbm < 0 and .rssi_dbm >= -100)' <<<"$scan"
  vm_expect scan-open "$(echo "$scan" | jq -c '.[] | select(.ssid=="pw-open")')" \
    jq -e 'any(.[]; .ssid=="pw-open" and .security=="open" and .freq_mhz==2437)' <<<"$scan"
  vm_expect scan-mixed-as-wpa2 "$(echo "$scan" | jq -c '.[] | select(.ssid=="pw-mixed")')" \
    jq -e 'any(.[]; .ssid=="pw-mixed" and .security=="WPA2-PSK" and .freq_mhz==2422)' <<<"$scan"
else
  vm_fail scan "the guest never saw the three visible networks: $(guest_scan_json | jq -c '[.[].ssid]')"
fi

# timed_connect NAME SSID [PASSPHRASE]: connects, records the time as a
# metric, leaves the JSON reply in $reply.
timed_connect() {
  local name="$1" t0; shift
  t0=$(vm_now_ms)
  reply=$(guest_connect "$@")
  vm_metric "$name" $(( $(vm_now_ms) - t0 )) ms
  vm_log "connect $*: $reply"
}
result_is() { [ "$(json_field result_code <<<"$reply")" = "$1" ]; }
result_not_ok() { local c; c=$(json_field result_code <<<"$reply"); [ -n "$c" ] && [ "$c" != null ] && [ "$c" != 0 ]; }
guest_disconnect() { pw disconnect "$(json_field session_id <<<"$reply")" >/dev/null 2>>"$VM_LOGDIR/guest-cli.log"; }
settle_disconnected() {
  vm_wait_until 20 "wlan0 disconnected" wlan0_state_is disconnected &&
    vm_wait_until 10 "no proxy profile" no_proxy_profile
}

# connect_ok NAME SSID [PASSPHRASE]: a connect expected to succeed. Under
# TCG on a loaded machine the stack itself drops some (seen: 802.11
# authentication timing out and retried by wpa_supplicant 6 s later, the
# link up 19 s after the request): one more attempt, after the host has
# settled, counted in the metric connect-retries. A second failure fails
# the check.
connect_ok() {
  timed_connect "$@"
  result_is 0 && return 0
  vm_log "connect $2 failed ($reply); the stack may have dropped it, retrying once"
  vm_metric connect-retries 1 count
  settle_disconnected
  timed_connect "$1-retry" "${@:2}"
}

# --- WPA2-PSK with the guest's PMK -----------------------------------------
# wpa2_up: the AP completed the 4-way handshake and NetworkManager holds the
# link on pw-wpa2.
wpa2_up() {
  vm_wait_until 10 "4-way handshake on pw-wpa2" vm_log_has hostapd-wlan1 'EAPOL-4WAY-HS-COMPLETED' &&
    vm_wait_until 30 "wlan0 on pw-wpa2" wlan0_connected_to pw-wpa2
}
connect_ok connect-first-ms pw-wpa2 "$PASS_WPA2"
# The first connect of a run has met a glitch of the stack under TCG: hostapd
# saw the station associate twice, dropped message 4/4 and reported a PSK
# mismatch, and the link fell 4 s after link-up (the proxy had answered at
# link-up, as it should; the guest is then told the link is gone). One more
# connect, counted in connect-retries; a second failure fails the checks.
if result_is 0 && ! wpa2_up; then
  vm_log "pw-wpa2 came up but did not stay up (the stack's glitch); connecting once more"
  vm_metric connect-retries 1 count
  guest_disconnect || true
  settle_disconnected
  timed_connect connect-first-ms-again pw-wpa2 "$PASS_WPA2"
fi
vm_expect connect-wpa2 "reply $reply" result_is 0
vm_expect connect-wpa2-4way "no EAPOL-4WAY-HS-COMPLETED in hostapd-wlan1.log" \
  vm_wait_until 10 "4-way handshake on pw-wpa2" vm_log_has hostapd-wlan1 'EAPOL-4WAY-HS-COMPLETED'
vm_expect connect-wpa2-host "wlan0 not on pw-wpa2" vm_wait_until 30 "wlan0 on pw-wpa2" wlan0_connected_to pw-wpa2
session=$(json_field session_id <<<"$reply")
pw disconnect "$session" >/dev/null 2>>"$VM_LOGDIR/guest-cli.log"
vm_expect disconnect-deletes-profile "$(proxy_profiles) proxy profile(s) left" \
  vm_wait_until 10 "proxy profile gone" no_proxy_profile
vm_expect disconnect-host "wlan0 still connected" vm_wait_until 10 "wlan0 disconnected" wlan0_state_is disconnected


# --- defect 3: only managed devices are followed ---------------------------
vm_expect d3-only-managed-devices "$(vm_log_count proxy 'Wi-Fi device added') devices followed: $(grep -o 'device added iface=[a-z0-9]*' "$VM_LOGDIR/proxy.log" | tr '\n' ' ')" \
  test "$(vm_log_count proxy 'Wi-Fi device added')" = 1

# --- wrong key refused; defect 4: no spurious warning ----------------------
timed_connect connect-wrong-key-ms pw-wpa2 'wrong-password-9'
vm_expect wrong-key-refused "reply $reply" result_not_ok
vm_expect wrong-key-no-profile "$(proxy_profiles) proxy profile(s) left" vm_wait_until 15 "no proxy profile" no_proxy_profile
vm_expect d4-no-spurious-delete-warning "$(grep -m1 'cannot delete the proxy' "$VM_LOGDIR/proxy.log")" \
  bash -c "! grep -q 'cannot delete the proxy' '$VM_LOGDIR/proxy.log'"
vm_expect d3-no-unmanaged-tries "$(grep -m3 -E 'WARN.*iface=wlan[1-6]' "$VM_LOGDIR/proxy.log")" \
  bash -c "! grep -qE 'WARN.*iface=wlan[1-6]' '$VM_LOGDIR/proxy.log'"
settle_disconnected

# --- defect 6: a connect right after a failure -----------------------------
connect_ok connect-after-failure-ms pw-wpa2 "$PASS_WPA2"
vm_expect d6-connect-after-failure "reply $reply" result_is 0

# --- switching networks (open) ---------------------------------------------
connect_ok connect-switch-ms pw-open
vm_expect switch-to-open "reply $reply" result_is 0
vm_expect switch-host-on-open "wlan0 not on pw-open" vm_wait_until 30 "wlan0 on pw-open" wlan0_connected_to pw-open
vm_expect switch-one-profile "$(proxy_profiles) proxy profiles" test "$(proxy_profiles)" = 1
vm_expect open-got-address "no DHCP lease on wlan0" vm_wait_until 30 "wlan0 has 10.0.2.x" bash -c "ip -4 addr show wlan0 | grep -q 'inet 10.0.2.'"

# --- the AP disappears: NOTIF_DISCONNECTED ---------------------------------
# The AP is disabled (it deauthenticates its stations and stops beaconing);
# NetworkManager gives the link 15 s to come back, then drops the
# connection and deletes the volatile profile.
ndisc() { grep -c '"type":"disconnected"' "$VM_LOGDIR/watch.log" || true; }
before=$(ndisc)
enabled_before=$(vm_log_count hostapd-wlan2 'AP-ENABLED')
# What NetworkManager says while the AP goes (for the record: device and
# active-connection states, in order).
vm_bg nm-signals dbus-monitor --system "type='signal',sender='org.freedesktop.NetworkManager'"
hostapd_cli -p "$RUN/hostapd" -i wlan2 disable >/dev/null
vm_expect ap-gone-notif-disconnected "no disconnected notification in watch.log" \
  vm_wait_until 60 "NOTIF_DISCONNECTED" bash -c "[ \$(grep -c '\"type\":\"disconnected\"' '$VM_LOGDIR/watch.log') -gt $before ]"
vm_expect ap-gone-profile-deleted "$(proxy_profiles) proxy profiles" vm_wait_until 20 "no proxy profile" no_proxy_profile
vm_stop nm-signals TERM 5
hostapd_cli -p "$RUN/hostapd" -i wlan2 enable >/dev/null
settle_disconnected
vm_wait_until 60 "pw-open beacons again" bash -c "[ \$(grep -c AP-ENABLED '$VM_LOGDIR/hostapd-wlan2.log') -gt $enabled_before ]"

# --- defect 5: WPA2/WPA3 transition network with the guest's PMK -----------
# NetworkManager 1.42 offers SAE for any wpa-psk profile (pmf=disable does not
# change that: seen in this test), wpa_supplicant picks SAE and has no
# password: the proxy refuses at once with status 43 (invalid AKMP).
vm_retry 3 "guest scan sees pw-mixed" scan_has pw-mixed >/dev/null
timed_connect connect-transition-ms pw-mixed "$PASS_MIXED"
vm_expect d5-transition-refused-43 "reply $reply" result_is 43
vm_expect d5-transition-no-activation "NetworkManager activated a pw-mixed profile" \
  bash -c "! grep -q 'proxy-wifi-pw-mixed' '$VM_LOGDIR/NetworkManager.log'"
settle_disconnected

# --- defect 1: a hidden network reaches the guest --------------------------
hidden_bssid=$(cat /sys/class/net/wlan3/address)
guest_sees_hidden() {
  guest_scan_json --ssid pw-hidden | jq -e --arg b "$hidden_bssid" 'any(.[]; .ssid=="pw-hidden" and .bssid==$b)' >/dev/null && return 0
  grep -F '"pw-hidden"' "$VM_LOGDIR/watch.log" | jq -e --arg b "$hidden_bssid" 'any(.bss[]?; .ssid=="pw-hidden" and .bssid==$b)' >/dev/null
}
vm_expect d1-hidden-in-guest-scan "the guest saw $(guest_scan_json | jq -c --arg b "$hidden_bssid" '[.[] | select(.bssid==$b) | .ssid]') for $hidden_bssid" \
  vm_wait_until 60 "guest sees pw-hidden" guest_sees_hidden
connect_ok connect-hidden-ms pw-hidden "$PASS_HIDDEN"
vm_expect d1-hidden-connect "reply $reply" result_is 0
# The host joined it: wpa_supplicant finished the 4-way handshake with the
# hidden AP's BSSID (a check of the host's state alone failed once when the
# link dropped 4 s after the handshake under load: hostapd saw a duplicate
# association and dropped message 4/4, the stack's race, not the proxy's).
hidden_joined() { wlan0_connected_to pw-hidden || grep -q "wlan0: WPA: Key negotiation completed with $hidden_bssid" "$VM_LOGDIR/wpa_supplicant.log"; }
vm_expect d1-hidden-host "wlan0 never joined pw-hidden" vm_wait_until 30 "wlan0 joined pw-hidden" hidden_joined
guest_disconnect; settle_disconnected

# --- defect 2: a targeted scan during an untargeted one --------------------
# The proof that the targeted scan is not dropped: NetworkManager is asked
# for an explicit scan probing pw-hidden2 (before the fix, the request joined
# the running untargeted scan and no such scan was ever requested).
# wpa_supplicant may still reject it ("one is already pending": NetworkManager
# runs its own periodic scans while disconnected); the backend then retries
# a targeted scan whose SSID did not show (up to 3 attempts), and the guest,
# like a real one, scans again if it still does not see the network.
nm_knows_hidden2() { nmcli -t -f SSID dev wifi list ifname wlan0 --rescan no | grep -qx pw-hidden2; }
nm_probe_requests() { grep -c 'start explicit scan.*"pw-hidden2"' "$VM_LOGDIR/NetworkManager.log" || true; }
if nm_knows_hidden2; then
  vm_fail d2-targeted-during-untargeted "pw-hidden2 was probed before the check"
else
  probes_before=$(nm_probe_requests)
  pw scan >/dev/null 2>>"$VM_LOGDIR/guest-cli.log"                 # starts a host scan
  pw scan --ssid pw-hidden2 >/dev/null 2>>"$VM_LOGDIR/guest-cli.log" # arrives while it runs
  vm_expect d2-targeted-during-untargeted "NetworkManager was never asked to probe pw-hidden2" \
    vm_wait_until 30 "explicit scan probing pw-hidden2" bash -c "[ \$(grep -c 'start explicit scan.*\"pw-hidden2\"' '$VM_LOGDIR/NetworkManager.log') -gt $probes_before ]"
  guest_told_hidden2() {
    grep -qF '"pw-hidden2"' "$VM_LOGDIR/watch.log" && return 0
    guest_scan_json --ssid pw-hidden2 | jq -e 'any(.[]; .ssid=="pw-hidden2")' >/dev/null
  }
  vm_expect d2-guest-notified "the guest never saw pw-hidden2 ($(nm_probe_requests) explicit probes, $(grep -c 'Reject scan trigger' "$VM_LOGDIR/wpa_supplicant.log") rejected scan triggers)" \
    vm_wait_until 60 "the guest sees pw-hidden2" guest_told_hidden2
fi

# --- mirroring: the host is already on the network -------------------------
if vm_wait_until 60 "host joins pw-open with nmcli" nmcli dev wifi connect pw-open ifname wlan0 name host-open; then
  timed_connect connect-mirror-ms pw-open
  vm_expect mirror-connect "reply $reply" result_is 0
  vm_expect mirror-no-proxy-profile "$(proxy_profiles) proxy profiles" no_proxy_profile
  guest_disconnect
  vm_expect mirror-host-stays "wlan0 left pw-open after the guest disconnected" wlan0_connected_to pw-open
  nmcli con down host-open >/dev/null; nmcli con delete host-open >/dev/null
else
  vm_fail mirror-connect "nmcli could not join pw-open"
fi
settle_disconnected

# --- NetworkManager restarts, then the system bus itself --------------------
# Issue 17 item 16: after NetworkManager goes away, the bus goes too (every
# client loses its connection). The proxy must say so in `ctl status`,
# reconnect with backoff, and follow NetworkManager again.
vm_expect health-up "ctl status does not say the backend is up" backend_state_is up
vm_stop NetworkManager TERM 30
vm_expect nm-gone-noticed "no 'went away' in proxy.log" vm_wait_until 20 "proxy sees NM gone" vm_log_has proxy 'NetworkManager went away'
vm_expect health-service-down "ctl status does not say service-down" vm_wait_until 10 "status: service-down" backend_state_is service-down
vm_stop wpa_supplicant TERM 20
bus_pid=$(pgrep -x dbus-daemon | head -1)
kill "$bus_pid"
vm_expect bus-lost-noticed "no 'lost the D-Bus connection' in proxy.log" \
  vm_wait_until 20 "proxy sees the bus gone" vm_log_has proxy 'lost the D-Bus connection'
vm_expect health-reconnecting "ctl status does not say reconnecting" vm_wait_until 10 "status: reconnecting" backend_state_is reconnecting
vm_check bus-restarted vm_start_system_bus
vm_expect bus-reconnected "no 'reconnected' in proxy.log" vm_wait_until 30 "proxy back on the bus" vm_log_has proxy 'reconnected to the D-Bus bus'
vm_bg wpa_supplicant wpa_supplicant -u -t
vm_wait_until 20 "wpa_supplicant on the bus" \
  dbus-send --system --print-reply --dest=fi.w1.wpa_supplicant1 /fi/w1/wpa_supplicant1 \
    org.freedesktop.DBus.Properties.Get string:fi.w1.wpa_supplicant1 string:Interfaces
start_nm
vm_expect nm-back-noticed "no 'appeared' in proxy.log" vm_wait_until 60 "proxy sees NM back" vm_log_has proxy 'NetworkManager appeared'
vm_expect health-up-again "ctl status does not say up" vm_wait_until 60 "status: up" backend_state_is up
vm_expect proxy-survived-bus-loss "the proxy exited" vm_running proxy
vm_expect nm-back-scan "no pw-wpa2 after the restart" vm_wait_until 60 "scan after NM restart" scan_has pw-wpa2

# --- defect 3, part 2: a device that becomes managed is picked up ----------
added6=$(vm_log_count proxy 'device added iface=wlan6'); removed6=$(vm_log_count proxy 'device removed iface=wlan6')
nmcli dev set wlan6 managed yes
vm_expect d3-newly-managed-added "wlan6 not followed once managed" \
  vm_wait_until 30 "proxy follows wlan6" bash -c "[ \$(grep -c 'device added iface=wlan6' '$VM_LOGDIR/proxy.log') -gt $added6 ]"
nmcli dev set wlan6 managed no
vm_expect d3-unmanaged-removed "wlan6 still followed once unmanaged" \
  vm_wait_until 30 "proxy drops wlan6" bash -c "[ \$(grep -c 'device removed iface=wlan6' '$VM_LOGDIR/proxy.log') -gt $removed6 ]"

# --- benchmark (NM_BENCH=1): the proxy against nmcli, same run, same AP -----
median() { sort -n | awk '{a[NR]=$1} END {if (NR) print (NR%2 ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2)); else print 0}'; }
timed_ms() { local t0; t0=$(vm_now_ms); "$@" >/dev/null 2>>"$VM_LOGDIR/bench.log"; echo $(( $(vm_now_ms) - t0 )); }
if [ "${NM_BENCH:-0}" = 1 ]; then
  rounds="${NM_BENCH_ROUNDS:-10}"
  : >"$RUN/scan-guest"; : >"$RUN/scan-nmcli"
  for (( i = 0; i < rounds; i++ )); do
    timed_ms pw scan >>"$RUN/scan-guest"
    timed_ms nmcli --terse dev wifi list --rescan no >>"$RUN/scan-nmcli"
  done
  vm_metric bench-scan-guest-median "$(median <"$RUN/scan-guest")" ms
  vm_metric bench-scan-nmcli-median "$(median <"$RUN/scan-nmcli")" ms
  : >"$RUN/conn-guest"; : >"$RUN/conn-nmcli"; : >"$RUN/conn-nmcli-link"
  for (( i = 0; i < ${NM_BENCH_CONNECTS:-10}; i++ )); do
    settle_disconnected
    t0=$(vm_now_ms); reply=$(guest_connect pw-wpa2 "$PASS_WPA2")
    echo $(( $(vm_now_ms) - t0 )) >>"$RUN/conn-guest"
    result_is 0 || vm_log "bench: guest connect failed: $reply"
    guest_disconnect
    settle_disconnected
    # nmcli waits for ACTIVATED (DHCP included); --wait 20 as the guest.
    t=$(timed_ms nmcli --wait 20 dev wifi connect pw-wpa2 password "$PASS_WPA2" ifname wlan0 name bench-host)
    echo "$t" >>"$RUN/conn-nmcli"
    nmcli con delete bench-host >/dev/null 2>&1 || true
  done
  settle_disconnected
  vm_metric bench-connect-guest-median "$(median <"$RUN/conn-guest")" ms
  vm_metric bench-connect-nmcli-median "$(median <"$RUN/conn-nmcli")" ms
  vm_log "bench samples: scan guest $(tr '\n' ' ' <"$RUN/scan-guest")| scan nmcli $(tr '\n' ' ' <"$RUN/scan-nmcli")| connect guest $(tr '\n' ' ' <"$RUN/conn-guest")| connect nmcli $(tr '\n' ' ' <"$RUN/conn-nmcli")"
fi

# --- SIGTERM cleans up ------------------------------------------------------
connect_ok connect-before-sigterm-ms pw-wpa2 "$PASS_WPA2"
vm_expect sigterm-precondition "reply $reply" result_is 0
vm_expect sigterm-exits "the proxy needed SIGKILL" vm_stop proxy TERM 20
vm_expect sigterm-profile-deleted "$(proxy_profiles) proxy profiles left" vm_wait_until 10 "no proxy profile" no_proxy_profile
vm_expect sigterm-host-disconnected "wlan0 still connected" vm_wait_until 20 "wlan0 disconnected" wlan0_state_is disconnected

vm_log "scenario body done"
