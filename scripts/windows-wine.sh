#!/usr/bin/env bash
# Builds the real proxy-wifi.exe for x86_64-pc-windows-gnu on Linux and runs
# it under Wine (issue 21):
#
#  1. smoke test: `proxy-wifi.exe serve --backend wlanapi --tcp 127.0.0.1
#     --fake-network ...` under Wine, driven by the Linux `proxy-wifi guest`
#     over loopback TCP (scan, connect, disconnect, a refused connect),
#     then stopped with a console Ctrl-C; checks what the service logged
#     about Wine's WlanAPI (no adapters, notifications not implemented) and
#     names the Wine stubs it hit;
#  2. the library's and the binary's unit tests, built for Windows and run
#     under Wine (CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER).
#
# Toolchain: Debian's rustc-web/cargo-web with rust-web-src (-Zbuild-std:
# rustup cannot fetch Windows targets here) and the mingw-w64 linker; Wine is
# Debian's wine64 (8.0). Packages are installed when missing (as root or
# through sudo). Where Wine cannot run, it prints SKIPPED with the reason.
#
# Runtime on 2 cores: first run ~10-15 min (std and dependencies for the
# target, twice: the binary and the test harnesses; Wine prefix ~10 s);
# later runs ~1-2 min (incremental build, smoke test ~20 s, unit tests
# under Wine ~30 s). The build directory is shared with windows-check.sh:
# $WINDOWS_TARGET_DIR, default target-windows.
#
# Test-only: scripts/wine/processprng.c is built into bcryptprimitives.dll
# in the build directory and reaches the programs through WINEPATH only. It
# is never next to the product (see the file for why Wine needs it).
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
# panic_abort too: a std built by -Zbuild-std=std alone lacks it for
# proc-macro-free targets that ask for it; cheap to include.
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

# --- smoke test --------------------------------------------------------------
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
REQ_PORT=$(free_port)
NOTIF_PORT=$(free_port)
SERVE_LOG=$WORK/serve.log
SERVE_PID=
cleanup() {
  if [ -n "$SERVE_PID" ] && kill -0 "$SERVE_PID" 2>/dev/null; then kill -KILL "$SERVE_PID" 2>/dev/null || true; fi
  WINEDEBUG=-all "$WINESERVER" -k 2>/dev/null || true
}
trap cleanup EXIT

# Polls for a line in the service's log, with a deadline.
wait_log() {
  local pattern=$1 limit=$2 start=$SECONDS
  until grep -q -- "$pattern" "$SERVE_LOG"; do
    if [ -n "$SERVE_PID" ] && ! kill -0 "$SERVE_PID" 2>/dev/null; then
      cat "$SERVE_LOG"
      fail "the service exited while waiting for '$pattern'"
    fi
    if [ $((SECONDS - start)) -ge "$limit" ]; then
      cat "$SERVE_LOG"
      fail "no '$pattern' in the service's log within $limit s"
    fi
    sleep 0.2
  done
}
guest() {
  "$LINUX_BIN" guest --tcp 127.0.0.1 --request-port "$REQ_PORT" \
    --notification-port "$NOTIF_PORT" --timeout 20 --json "$@"
}
check_json() {
  # $1: python expression over `v` (the parsed output); $2: what it means.
  python3 -c "import json,sys; v=json.load(sys.stdin); sys.exit(0 if ($1) else 1)" ||
    fail "$2"
}

log "smoke test: proxy-wifi.exe serve --backend wlanapi under Wine, guest over TCP 127.0.0.1:$REQ_PORT"
t0=$SECONDS
# fixme/err on: Wine names every stub it runs into.
WINEDEBUG=err+all,fixme+all RUST_LOG=debug "$WINE" "$EXE" serve --backend wlanapi \
  --tcp 127.0.0.1 --request-port "$REQ_PORT" --notification-port "$NOTIF_PORT" \
  --scan-min-latency-ms 0 --notify-host-disconnect \
  --fake-network 'WineNet=02:00:00:00:00:21' --fake-network 'Wine Guest=02:00:00:00:00:22' \
  </dev/null >"$SERVE_LOG" 2>&1 &
SERVE_PID=$!
wait_log ' ready' 90
echo "service ready after $((SECONDS - t0)) s"

# What the service made of Wine's WlanAPI.
grep -q 'WlanAPI client handle open' "$SERVE_LOG" || fail "WlanOpenHandle was not logged"
if grep -q 'WlanRegisterNotification failed' "$SERVE_LOG"; then
  grep -q 'Polling adapters and connections' "$SERVE_LOG" ||
    fail "WlanRegisterNotification failed, but the service did not say it polls instead"
  echo "WlanRegisterNotification: not implemented here; the service polls (logged)"
fi
if grep -q 'lists no wireless interface' "$SERVE_LOG"; then
  echo "WlanEnumInterfaces: zero interfaces (logged)"
else
  echo "WlanEnumInterfaces: $(grep -c 'Wi-Fi interface added' "$SERVE_LOG") interface(s)"
fi

guest scan >"$WORK/scan.json" || fail "guest scan failed"
check_json '{b["ssid"] for b in v} >= {"WineNet", "Wine Guest"} and all(b["freq_khz"] == 5240000 for b in v if b["ssid"].startswith("Wine"))' \
  "the scan does not show both fake networks: $(cat "$WORK/scan.json")" <"$WORK/scan.json"
echo "scan: $(python3 -c 'import json,sys; print(", ".join(b["ssid"] + " " + b["bssid"] for b in json.load(sys.stdin)))' <"$WORK/scan.json")"
guest scan --ssid 'Wine Guest' >"$WORK/scan2.json" || fail "targeted guest scan failed"
check_json '"Wine Guest" in {b["ssid"] for b in v}' "the targeted scan misses 'Wine Guest'" <"$WORK/scan2.json"

# The notification listener, before anything that could notify.
"$LINUX_BIN" guest --tcp 127.0.0.1 --notification-port "$NOTIF_PORT" --json \
  watch --count 1 >"$WORK/watch.json" 2>"$WORK/watch.err" &
WATCH_PID=$!

guest connect WineNet --passphrase 'correct horse battery' >"$WORK/connect.json" ||
  fail "connect to the fake network failed: $(cat "$WORK/connect.json")"
check_json 'v["success"] and v["bssid"] == "02:00:00:00:00:21"' "unexpected connect answer: $(cat "$WORK/connect.json")" <"$WORK/connect.json"
SESSION=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["session_id"])' <"$WORK/connect.json")
echo "connect WineNet: success, session $SESSION"
guest disconnect "$SESSION" >"$WORK/disconnect.json" || fail "disconnect failed"
check_json 'v["disconnected"]' "unexpected disconnect answer" <"$WORK/disconnect.json"
echo "disconnect session $SESSION: done"

# A network no adapter can reach: refused (exit 1), the service stays up.
rc=0
guest connect Elsewhere >"$WORK/refused.json" || rc=$?
[ "$rc" = 1 ] || fail "connect to an unknown network: exit $rc, expected 1 (refused)"
check_json 'not v["success"]' "the unknown network was not refused" <"$WORK/refused.json"
echo "connect Elsewhere: refused ($(python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])' <"$WORK/refused.json"))"
guest scan >/dev/null || fail "the service no longer answers after a refused connect"

# Notifications: Wine's WlanAPI has no adapter and cannot notify, so there
# is no host event the service could forward.
kill "$WATCH_PID" 2>/dev/null || true
wait "$WATCH_PID" 2>/dev/null || true
if [ -s "$WORK/watch.json" ]; then
  echo "notification received: $(cat "$WORK/watch.json")"
else
  echo "SKIPPED: a notification from the Windows service: under Wine's WlanAPI (no adapter, no WlanRegisterNotification) no host event exists to forward"
fi

# Console Ctrl-C. Wine turns SIGINT to the process of a console program
# into CTRL_C_EVENT for its console handlers (ntdll's SIGINT handler runs
# the console control routine), as Ctrl-C in a Windows console would.
log "Ctrl-C (SIGINT -> CTRL_C_EVENT) under Wine"
kill -INT "$SERVE_PID"
start=$SECONDS
while kill -0 "$SERVE_PID" 2>/dev/null; do
  if [ $((SECONDS - start)) -ge 20 ]; then
    cat "$SERVE_LOG"
    fail "the service did not stop within 20 s of Ctrl-C"
  fi
  sleep 0.2
done
rc=0
wait "$SERVE_PID" || rc=$?
SERVE_PID=
[ "$rc" = 0 ] || { cat "$SERVE_LOG"; fail "the service exited with $rc after Ctrl-C"; }
grep -q 'Ctrl-C: stopping' "$SERVE_LOG" || fail "the console handler did not report Ctrl-C"
grep -q 'WlanAPI client handle closed' "$SERVE_LOG" || fail "WlanCloseHandle did not run on the way out"
grep -q ' stopped$' "$SERVE_LOG" || grep -q 'INFO proxy_wifi::cli::serve: stopped' "$SERVE_LOG" ||
  fail "the service did not log its clean stop"
echo "stopped cleanly (exit 0) $((SECONDS - start)) s after Ctrl-C; WlanCloseHandle ran"

log "Wine stubs and errors the service ran into"
grep -E '^[0-9a-f]+:(fixme|err):' "$SERVE_LOG" | sed -E 's/^[0-9a-f]+:([a-z]+):([^:]+):([A-Za-z0-9_]+).*/\1:\2:\3/' |
  sort | uniq -c || echo "(none)"
echo "smoke test passed in $((SECONDS - t0)) s (log: $SERVE_LOG)"

# --- unit tests under Wine -----------------------------------------------------
log "unit tests (library and binary) for $TARGET, run under Wine"
t0=$SECONDS
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER=$WINE
export WINEDEBUG=-all
"$DEBIAN_CARGO" test --locked "${BUILD_STD[@]}" --lib --bins
echo "unit tests under Wine passed in $((SECONDS - t0)) s"
