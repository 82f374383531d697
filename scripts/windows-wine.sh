#!/usr/bin/env bash
# Builds the real proxy-wifi.exe for x86_64-pc-windows-gnu on Linux and runs
# it under Wine (issue 21), driven by the Linux `proxy-wifi guest` over
# loopback TCP:
#
#  A. `serve --backend wlanapi --fake-network ...` on Wine's own WlanAPI (no
#     adapter; WlanRegisterNotification not implemented): the service must
#     say so, keep serving, answer scan/connect/disconnect for the fake
#     networks, refuse other networks, and stop cleanly on a console Ctrl-C;
#  B. the same .exe over a test-only wlanapi.dll with one scripted adapter
#     (scripts/wine/fake-wlanapi.c): the real FFI paths (notification
#     callback, BSS list, temporary-profile connect, disconnect) and
#     notifications to the guest (scan results, signal quality);
#  C. the library's and the binary's unit tests, built for Windows and run
#     under Wine (CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER).
# The Wine stubs each run hit are listed from Wine's fixme/err messages.
#
# Toolchain: Debian's rustc-web/cargo-web with rust-web-src (-Zbuild-std:
# rustup cannot fetch Windows targets here) and the mingw-w64 linker; Wine is
# Debian's wine64 (8.0). Packages are installed when missing (as root or
# through sudo). Where Wine cannot run, it prints SKIPPED with the reason.
#
# Runtime (2 cores shared with other jobs, load 15-20): warm run 70 s
# (smoke A 14 s, B 22 s, unit tests under Wine 30 s). Cold: std and the
# dependencies for the target, for the binary (7 min wall, 3.9 min CPU) and
# for the test harness with the dev-dependencies (~25 min wall under that
# load); roughly 6-8 min on an idle 2-core machine. The build directory is
# shared with windows-check.sh: $WINDOWS_TARGET_DIR, default target-windows.
#
# Test-only files, never in the product: bcryptprimitives.dll from
# scripts/wine/processprng.c (Wine 8.0 lacks ProcessPrng, which Rust's std
# imports) reaches the programs through WINEPATH; the test wlanapi.dll sits in
# a test folder with a link to the .exe.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

TARGET=x86_64-pc-windows-gnu
DEBIAN_RUSTC=/usr/bin/rustc
DEBIAN_CARGO=/usr/bin/cargo
WINE=/usr/lib/wine/wine64
WINESERVER=/usr/lib/wine/wineserver
LINUX_TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
WIN_DIR=${WINDOWS_TARGET_DIR:-$ROOT/target-windows}
case $WIN_DIR in /*) ;; *) WIN_DIR=$ROOT/$WIN_DIR ;; esac
WORK=$WIN_DIR/wine
PKGS=(rustc-web cargo-web rust-web-src gcc-mingw-w64-x86-64-posix wine64)

log() { printf '\n== %s\n' "$*"; }
fail() {
  printf 'FAILED: %s\n' "$*" >&2
  exit 1
}
skip() {
  printf 'SKIPPED: %s\n' "$*"
  exit 0
}

if [ "$(uname -m)" != x86_64 ]; then
  skip "Windows build under Wine: this machine is $(uname -m); wine64 and the mingw-w64 target need x86_64"
fi

missing_pkgs() {
  local p
  for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -qx 'install ok installed' ||
      printf '%s\n' "$p"
  done
}
mapfile -t need < <(missing_pkgs)
if [ "${#need[@]}" -gt 0 ]; then
  log "installing ${need[*]}"
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=900 install -y -qq \
    --no-install-recommends "${need[@]}"
fi
if [ "$(dpkg-query -W -f='${Version}' rustc-web)" != "$(dpkg-query -W -f='${Version}' rust-web-src)" ]; then
  fail "rustc-web and rust-web-src versions differ: -Zbuild-std needs the sources of this compiler"
fi

# --- build -------------------------------------------------------------------
export RUSTC=$DEBIAN_RUSTC RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR=$WIN_DIR
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc
# std depends on panic_abort anyway; cargo adds libtest for the test harness.
BUILD_STD=(-Zbuild-std=std,panic_abort --target "$TARGET")

log "building proxy-wifi.exe for $TARGET ($($DEBIAN_RUSTC --version))"
t0=$SECONDS
"$DEBIAN_CARGO" build --locked "${BUILD_STD[@]}" --bin proxy-wifi
EXE=$WIN_DIR/$TARGET/debug/proxy-wifi.exe
[ -f "$EXE" ] || fail "no $EXE after the build"
echo "built $EXE in $((SECONDS - t0)) s"

mkdir -p "$WORK/shim"
SHIM_SRC=$ROOT/scripts/wine/processprng.c
SHIM=$WORK/shim/bcryptprimitives.dll
if [ ! -f "$SHIM" ] || [ "$SHIM_SRC" -nt "$SHIM" ]; then
  x86_64-w64-mingw32-gcc -O2 -Wall -Werror -shared -o "$SHIM" "$SHIM_SRC" -lbcrypt
fi

# The Linux guest side.
log "building the Linux proxy-wifi (guest side)"
(unset RUSTC RUSTC_BOOTSTRAP CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER
  CARGO_TARGET_DIR=$LINUX_TARGET cargo build --locked --quiet --bin proxy-wifi)
LINUX_BIN=$LINUX_TARGET/debug/proxy-wifi
[ -x "$LINUX_BIN" ] || fail "no Linux proxy-wifi at $LINUX_BIN"

# --- Wine ----------------------------------------------------------------------
export WINEPREFIX=$WORK/prefix
# The shim's folder is on the DLL search path (PATH) of every Wine program.
export WINEPATH="Z:${WORK//\//\\}\\shim"
# No Gecko/Mono installers, no desktop integration in the prefix.
export WINEDLLOVERRIDES="mscoree,mshtml,winemenubuilder.exe="
[ -x "$WINE" ] || skip "Windows build under Wine: $WINE is missing"
if [ ! -f "$WINEPREFIX/system.reg" ]; then
  log "creating the Wine prefix $WINEPREFIX"
  if ! WINEDEBUG=-all timeout 120 "$WINE" wineboot --init >"$WORK/wineboot.log" 2>&1; then
    cat "$WORK/wineboot.log"
    skip "Windows build under Wine: Wine cannot create a prefix on this machine (wineboot failed)"
  fi
fi
if ! WINEDEBUG=-all timeout 60 "$WINE" "$EXE" --version >"$WORK/version.log" 2>&1; then
  cat "$WORK/version.log"
  skip "Windows build under Wine: proxy-wifi.exe does not start under Wine here"
fi
echo "under Wine: $(tail -n1 "$WORK/version.log") ($("$WINE" --version))"

# --- smoke tests ---------------------------------------------------------------
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
SERVE_PID=
WATCH_PID=
cleanup() {
  local p
  for p in "$WATCH_PID" "$SERVE_PID"; do
    if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then kill -KILL "$p" 2>/dev/null || true; fi
  done
  WINEDEBUG=-all "$WINESERVER" -k 2>/dev/null || true
}
trap cleanup EXIT

# Polls a file for a pattern, with a deadline; fails if the service died.
wait_for() {
  local file=$1 pattern=$2 limit=$3 start=$SECONDS
  until grep -q -- "$pattern" "$file" 2>/dev/null; do
    if [ -n "$SERVE_PID" ] && ! kill -0 "$SERVE_PID" 2>/dev/null; then
      cat "$SERVE_LOG"
      fail "the service exited while waiting for '$pattern' in $file"
    fi
    if [ $((SECONDS - start)) -ge "$limit" ]; then
      cat "$SERVE_LOG"
      fail "no '$pattern' in $file within $limit s"
    fi
    sleep 0.2
  done
}
guest() {
  "$LINUX_BIN" guest --tcp 127.0.0.1 --request-port "$REQ_PORT" \
    --notification-port "$NOTIF_PORT" --timeout 20 --json "$@"
}
check_json() {
  # $1: a Python expression over `v`, the parsed standard input; $2: the failure.
  python3 -c "import json,sys; v=json.load(sys.stdin); sys.exit(0 if ($1) else 1)" ||
    fail "$2"
}
json_field() {
  python3 -c "import json,sys; print(json.load(sys.stdin)[\"$1\"])"
}

# start_service LABEL EXE [serve flags...]: runs `serve --backend wlanapi`
# under Wine with fixme/err messages on (Wine names every stub it hits).
start_service() {
  local label=$1 exe=$2
  shift 2
  REQ_PORT=$(free_port)
  NOTIF_PORT=$(free_port)
  SERVE_LOG=$WORK/serve-$label.log
  # Emptied here: the background job's redirection may come after the
  # first poll, which must not read a previous run's log.
  : >"$SERVE_LOG"
  WINEDEBUG=err+all,fixme+all RUST_LOG=debug "$WINE" "$exe" serve --backend wlanapi \
    --tcp 127.0.0.1 --request-port "$REQ_PORT" --notification-port "$NOTIF_PORT" \
    --scan-min-latency-ms 0 "$@" </dev/null >"$SERVE_LOG" 2>&1 &
  SERVE_PID=$!
  wait_for "$SERVE_LOG" 'proxy_wifi::daemon: ready' 90
  grep -q 'WlanAPI client handle open' "$SERVE_LOG" || fail "WlanOpenHandle was not logged"
}

# stop_service: a console Ctrl-C, then checks the service stopped cleanly.
# Wine turns SIGINT to the process of a console program into CTRL_C_EVENT
# for its console control handlers (ntdll's SIGINT handler starts the
# console control routine), as Ctrl-C in a Windows console does.
stop_service() {
  local start=$SECONDS rc=0
  kill -INT "$SERVE_PID"
  while kill -0 "$SERVE_PID" 2>/dev/null; do
    if [ $((SECONDS - start)) -ge 20 ]; then
      cat "$SERVE_LOG"
      fail "the service did not stop within 20 s of Ctrl-C"
    fi
    sleep 0.2
  done
  wait "$SERVE_PID" || rc=$?
  SERVE_PID=
  [ "$rc" = 0 ] || { cat "$SERVE_LOG"; fail "the service exited with $rc after Ctrl-C"; }
  grep -q 'Ctrl-C: stopping' "$SERVE_LOG" || fail "the console handler did not report Ctrl-C"
  grep -q 'proxy_wifi::daemon: stopped' "$SERVE_LOG" || fail "the service did not log its clean stop"
  grep -q 'WlanAPI client handle closed' "$SERVE_LOG" || fail "WlanCloseHandle did not run on the way out"
  echo "Ctrl-C (SIGINT -> CTRL_C_EVENT): stopped cleanly, exit 0, $((SECONDS - start)) s; WlanCloseHandle ran"
}

# wine_stubs LABEL: the Wine fixme/err lines the service produced, counted.
wine_stubs() {
  echo "Wine stubs and errors hit ($1):"
  local lines
  lines=$(grep -E '^[0-9a-f]+:(fixme|err):' "$SERVE_LOG" |
    sed -E 's/^[0-9a-f]+:([a-z]+):([^:]+):([A-Za-z0-9_]+).*/\1:\2:\3/' | sort | uniq -c) || true
  echo "${lines:-   (none)}"
}

# Phase A: Wine's own WlanAPI (no adapter; WlanRegisterNotification a stub).
log "smoke test A: proxy-wifi.exe serve --backend wlanapi on Wine's WlanAPI, fake networks, guest over loopback TCP"
t0=$SECONDS
start_service wine-wlanapi "$EXE" \
  --fake-network 'WineNet=02:00:00:00:00:21' --fake-network 'Wine Guest=02:00:00:00:00:22'
echo "service ready after $((SECONDS - t0)) s"
if grep -q 'WlanRegisterNotification failed' "$SERVE_LOG"; then
  grep -q 'Polling adapters and connections' "$SERVE_LOG" ||
    fail "WlanRegisterNotification failed, but the service did not say it polls instead"
  echo "WlanRegisterNotification: not implemented; the service logged it and polls instead"
fi
if grep -q 'lists no wireless interface' "$SERVE_LOG"; then
  echo "WlanEnumInterfaces: zero interfaces; logged, serving fake networks"
else
  echo "WlanEnumInterfaces: $(grep -c 'Wi-Fi interface added' "$SERVE_LOG") interface(s)"
fi

guest scan >"$WORK/scan.json" || fail "guest scan failed"
check_json '{b["ssid"] for b in v} == {"WineNet", "Wine Guest"} and all(b["freq_khz"] == 5240000 for b in v)' \
  "the scan is not the two fake networks: $(cat "$WORK/scan.json")" <"$WORK/scan.json"
echo "scan: $(python3 -c 'import json,sys; print(", ".join(b["ssid"] + " " + b["bssid"] for b in json.load(sys.stdin)))' <"$WORK/scan.json")"
guest scan --ssid 'Wine Guest' >"$WORK/scan.json" || fail "targeted guest scan failed"
check_json '"Wine Guest" in {b["ssid"] for b in v}' "the targeted scan misses 'Wine Guest'" <"$WORK/scan.json"

guest connect WineNet --passphrase 'correct horse battery' >"$WORK/connect.json" ||
  fail "connect to the fake network failed: $(cat "$WORK/connect.json")"
check_json 'v["success"] and v["bssid"] == "02:00:00:00:00:21"' \
  "unexpected connect answer: $(cat "$WORK/connect.json")" <"$WORK/connect.json"
SESSION=$(json_field session_id <"$WORK/connect.json")
echo "connect WineNet: success, session $SESSION"
guest disconnect "$SESSION" >"$WORK/disconnect.json" || fail "disconnect failed"
check_json 'v["disconnected"]' "unexpected disconnect answer" <"$WORK/disconnect.json"
echo "disconnect session $SESSION: done"

# No adapter can reach any other network: refused (exit 1), service still up.
rc=0
guest connect Elsewhere >"$WORK/refused.json" || rc=$?
[ "$rc" = 1 ] || fail "connect to an unknown network: exit $rc, expected 1 (refused)"
echo "connect Elsewhere: refused ($(json_field status <"$WORK/refused.json"))"
guest scan >/dev/null || fail "the service no longer answers after a refused connect"
echo "notifications: none can arise here (no adapter, WlanAPI cannot notify); see phase B"
stop_service
wine_stubs "Wine's WlanAPI"
echo "smoke test A passed in $((SECONDS - t0)) s (log: $SERVE_LOG)"

# Phase B: the same .exe over a test-only wlanapi.dll with one scripted
# adapter (scripts/wine/fake-wlanapi.c), loaded from a test folder instead
# of Wine's builtin: the real FFI paths, and notifications to the guest.
log "smoke test B: the same proxy-wifi.exe over a test-only wlanapi.dll (one scripted adapter)"
t0=$SECONDS
FAKE_DIR=$WORK/fake-wlanapi
mkdir -p "$FAKE_DIR"
x86_64-w64-mingw32-gcc -O2 -Wall -Werror -shared -o "$FAKE_DIR/wlanapi.dll" "$ROOT/scripts/wine/fake-wlanapi.c"
ln -f "$EXE" "$FAKE_DIR/proxy-wifi.exe" 2>/dev/null || cp "$EXE" "$FAKE_DIR/proxy-wifi.exe"
WINEDLLOVERRIDES="$WINEDLLOVERRIDES;wlanapi=n" start_service fake-wlanapi "$FAKE_DIR/proxy-wifi.exe"
grep -q 'Wi-Fi interface added iface=Wine Test Wireless Adapter' "$SERVE_LOG" ||
  fail "the test wlanapi.dll was not used (no 'Wine Test Wireless Adapter')"
! grep -q 'WlanRegisterNotification failed' "$SERVE_LOG" || fail "WlanRegisterNotification failed on the test DLL"
echo "WlanOpenHandle, WlanRegisterNotification, WlanEnumInterfaces: one adapter"

: >"$WORK/watch.jsonl"
: >"$WORK/watch.err"
"$LINUX_BIN" guest --tcp 127.0.0.1 --notification-port "$NOTIF_PORT" --json watch \
  >"$WORK/watch.jsonl" 2>"$WORK/watch.err" &
WATCH_PID=$!
wait_for "$WORK/watch.err" 'listening for notifications' 20

guest scan >"$WORK/scan.json" || fail "guest scan failed"
check_json '{(b["ssid"], b["bssid"], b["security"], b["freq_khz"]) for b in v} == {("WineAP", "02:11:22:33:44:55", "open", 2437000), ("WineSecure", "02:11:22:33:44:66", "WPA2-PSK", 5180000)}' \
  "the scan is not the adapter's BSS list: $(cat "$WORK/scan.json")" <"$WORK/scan.json"
echo "scan (WlanGetNetworkBssList, WlanScan): WineAP open 2437 MHz, WineSecure WPA2-PSK 5180 MHz"
# The host scan it started ends with scan_complete: a scan notification.
wait_for "$WORK/watch.jsonl" '"scan_results"' 10
echo "notification: scan results (wlan_notification_acm_scan_complete)"

guest connect WineAP >"$WORK/connect.json" || fail "connect WineAP failed: $(cat "$WORK/connect.json")"
check_json 'v["success"] and v["bssid"] == "02:11:22:33:44:55"' "unexpected connect answer: $(cat "$WORK/connect.json")" <"$WORK/connect.json"
echo "connect WineAP (WlanConnect, temporary open profile, WlanQueryInterface): success"
wait_for "$WORK/watch.jsonl" '"signal_quality"' 10
python3 -c 'import json,sys; sys.exit(0 if any(json.loads(l).get("dbm") == -65 for l in open(sys.argv[1]) if "signal_quality" in l) else 1)' \
  "$WORK/watch.jsonl" || fail "the signal notification is not -65 dBm (70 %): $(cat "$WORK/watch.jsonl")"
echo "notification: signal quality -65 dBm (MSM signal_quality_change 70 %)"

guest connect WineSecure --passphrase 'correct horse battery' >"$WORK/connect.json" ||
  fail "connect WineSecure failed: $(cat "$WORK/connect.json")"
check_json 'v["success"] and v["bssid"] == "02:11:22:33:44:66"' "unexpected connect answer" <"$WORK/connect.json"
SESSION=$(json_field session_id <"$WORK/connect.json")
echo "connect WineSecure (WPA2-PSK profile with the PMK as keyMaterial): success, session $SESSION"
guest disconnect "$SESSION" >"$WORK/disconnect.json" || fail "disconnect failed"
wait_for "$SERVE_LOG" 'guest disconnected the host' 10
echo "disconnect session $SESSION (WlanDisconnect, disconnected notification): done"
rc=0
guest connect Missing >"$WORK/refused.json" || rc=$?
[ "$rc" = 1 ] || fail "connect to a network the adapter does not see: exit $rc, expected 1"
grep -q 'connection failed (host reason code 0x28002)' "$SERVE_LOG" ||
  fail "the refused connect did not come from the adapter's connection_complete"
echo "connect Missing: refused (connection_complete with reason 0x28002)"
kill "$WATCH_PID" 2>/dev/null || true
wait "$WATCH_PID" 2>/dev/null || true
WATCH_PID=
stop_service
wine_stubs "test wlanapi.dll"
echo "smoke test B passed in $((SECONDS - t0)) s (log: $SERVE_LOG)"

# --- unit tests under Wine -----------------------------------------------------
log "unit tests (library and binary) for $TARGET, run under Wine"
t0=$SECONDS
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER=$WINE
export WINEDEBUG=-all
"$DEBIAN_CARGO" test --locked "${BUILD_STD[@]}" --lib --bins
echo "unit tests under Wine passed in $((SECONDS - t0)) s"
