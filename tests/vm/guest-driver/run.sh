#!/usr/bin/env bash
# End-to-end test of the vsock_wifi guest driver (issue 19): builds the module
# against Debian's linux-headers-amd64, boots Debian's linux-image-amd64 in a
# QEMU VM (virtme-ng, TCG when KVM cannot run it) whose vsock device is
# rust-vmm's vhost-device-vsock, serves it with `proxy-wifi serve
# --hybrid-vsock`, and runs tests/vm/guest-driver/guest.sh inside.
#
# Prints `SKIPPED: <reason>` and exits 0 when the machine cannot run it
# (no kernel image, no QEMU, ...); exits non-zero on any failure.
# Environment: PROXY_WIFI (the binary; default: cargo build), VW_KEEP=1 keeps
# the work directory, VW_SMOKE=1 runs only load, scan and unload (for a
# second kernel), VW_KIMG/VW_KBUILD (see below) for a kernel not installed.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
START=$SECONDS

log() { printf '[host %5ss] %s\n' "$((SECONDS - START))" "$*"; }
skip() {
	echo "SKIPPED: $*"
	exit 0
}

# --- what the machine has ---------------------------------------------------
# The kernel of Debian's linux-image-amd64 (VW_KERNEL=<version> for another
# installed one with headers). A kernel that is not installed:
# VW_KIMG=<image> (unpacked with its lib/modules/<version> above it, where
# virtme-ng looks for the modules) and VW_KBUILD=<its headers' build tree>.
if [ -n "${VW_KIMG:-}" ]; then
	KIMG=$VW_KIMG
	KBUILD=${VW_KBUILD:?VW_KBUILD (the headers of VW_KIMG) is needed with VW_KIMG}
	KVER=${KIMG##*/vmlinuz-}
else
	KVER=${VW_KERNEL:-$(dpkg-query -W -f='${Depends}' linux-image-amd64 2>/dev/null |
		sed -n 's/^linux-image-\([^ ,]*\).*/\1/p')}
	[ -d "/lib/modules/$KVER/build" ] || KVER=""
	[ -n "$KVER" ] || skip "no Debian kernel image with headers (linux-image-amd64, linux-headers-amd64)"
	KIMG=/boot/vmlinuz-$KVER
	KBUILD=/lib/modules/$KVER/build
fi
[ -r "$KIMG" ] || skip "$KIMG is not readable"
command -v qemu-system-x86_64 >/dev/null || skip "no qemu-system-x86_64"
command -v vng >/dev/null || skip "no virtme-ng (vng)"
command -v vhost-device-vsock >/dev/null || skip "no vhost-device-vsock"
for tool in iw wpa_supplicant wpa_cli NetworkManager nmcli dbus-daemon; do
	command -v "$tool" >/dev/null || skip "no $tool for the guest"
done

# --- build ------------------------------------------------------------------
WORK=$(mktemp -d /tmp/vwgd.XXXXXX)
PIDS=()
cleanup() {
	local pid
	for pid in "${PIDS[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	wait 2>/dev/null || true
	if [ "${VW_KEEP:-0}" = 1 ]; then
		log "kept $WORK"
	else
		rm -rf "$WORK"
	fi
}
trap cleanup EXIT

log "building vsock_wifi.ko for $KVER (W=1)"
cp -a "$ROOT/guest/linux" "$WORK/module"
make -s -C "$KBUILD" M="$WORK/module" W=1 modules >"$WORK/build.log" 2>&1 ||
	{ cat "$WORK/build.log"; exit 1; }
if grep -E 'warning:|error:' "$WORK/build.log"; then
	echo "FAIL: the module does not build warning-free"
	exit 1
fi

if [ -z "${PROXY_WIFI:-}" ]; then
	log "building proxy-wifi"
	(cd "$ROOT" && cargo build --quiet --bin proxy-wifi)
	PROXY_WIFI=${CARGO_TARGET_DIR:-$ROOT/target}/debug/proxy-wifi
fi

# The AF_VSOCK end-to-end test (ignored on a host kernel without
# vsock_loopback, like this machine's): the VM's Debian kernel has the
# module, so the guest runs it there.
log "building the AF_VSOCK test"
VSOCK_TEST=$(cd "$ROOT" && cargo test --quiet --test transport_vsock --no-run --message-format=json 2>/dev/null |
	python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "transport_vsock":
        print(m["executable"])')
[ -x "$VSOCK_TEST" ] || { echo "FAIL: no transport_vsock test binary"; exit 1; }

# Does the host know WPA3-SAE networks? (issue 13, branch guest-fixes)
HAVE_SAE=0
if grep -rqs 'wpa3-sae' "$ROOT/src/daemon/config.rs"; then
	HAVE_SAE=1
fi

# --- host side --------------------------------------------------------------
mkdir -p "$WORK/req"
cat >"$WORK/proxy-wifi.toml" <<EOF
backend = "simulated"
control_socket = "$WORK/ctl.sock"

[[simulated_network]]
ssid = "Home"
bssid = "02:00:00:00:00:01"
freq_khz = 2437000
security = "wpa2-psk"
passphrase = "correct horse"

[[simulated_network]]
ssid = "Cafe"
bssid = "02:00:00:00:00:02"
freq_khz = 5180000
rssi_dbm = -60
security = "open"
EOF
if [ "$HAVE_SAE" = 1 ]; then
	cat >>"$WORK/proxy-wifi.toml" <<EOF

[[simulated_network]]
ssid = "Sae3"
bssid = "02:00:00:00:00:03"
freq_khz = 2412000
security = "wpa3-sae"
passphrase = "open sesame"
EOF
fi
cat >>"$WORK/proxy-wifi.toml" <<EOF

[[guest]]
name = "vm"
hybrid_vsock = "$WORK/vm.vsock"
notify_host_disconnect = true
# iw starts listening for the end of its scan only after asking for it
# (iw's scan.c says so): an emulated VM needs more than the default 150 ms.
scan_min_latency_ms = 1500
EOF

start_vhost_device_vsock() {
	rm -f "$WORK/vhost.sock"
	vhost-device-vsock --vm "guest-cid=3,socket=$WORK/vhost.sock,uds-path=$WORK/vm.vsock" \
		>>"$WORK/vhost-device-vsock.log" 2>&1 &
	VHOST_PID=$!
	PIDS+=("$VHOST_PID")
}
start_vhost_device_vsock
RUST_LOG=proxy_wifi=debug "$PROXY_WIFI" serve --config "$WORK/proxy-wifi.toml" >"$WORK/serve.log" 2>&1 &
PIDS+=($!)

deadline=$((SECONDS + 20))
until [ -S "$WORK/vhost.sock" ] && [ -S "$WORK/vm.vsock_12345" ] && [ -S "$WORK/ctl.sock" ]; do
	if [ "$SECONDS" -ge "$deadline" ]; then
		cat "$WORK/vhost-device-vsock.log" "$WORK/serve.log"
		echo "FAIL: vhost-device-vsock or proxy-wifi did not start"
		exit 1
	fi
	sleep 0.2
done

# Runs the `proxy-wifi ctl` commands the guest asks for (host events).
serve_requests() {
	local cmd f
	while :; do
		for cmd in "$WORK"/req/*.cmd; do
			[ -e "$cmd" ] || continue
			f=${cmd%.cmd}
			# shellcheck disable=SC2046
			if "$PROXY_WIFI" ctl --control "$WORK/ctl.sock" $(cat "$cmd") >>"$WORK/ctl.log" 2>&1; then
				echo 0 >"$f.done.tmp"
			else
				echo 1 >"$f.done.tmp"
			fi
			rm -f "$cmd"
			mv "$f.done.tmp" "$f.done"
		done
		sleep 0.2
	done
}
serve_requests &
PIDS+=($!)

# --- the VM -----------------------------------------------------------------
MEM=1G
ACCEL=()
# /dev/kvm may exist without being able to run this kernel: TCG then.
if [ "${VW_KVM:-0}" != 1 ]; then
	ACCEL=(--disable-kvm)
fi
QEMU_OPTS="-object memory-backend-memfd,id=mem0,size=$MEM,share=on -numa node,memdev=mem0"
QEMU_OPTS+=" -chardev socket,id=vsock0,path=$WORK/vhost.sock -device vhost-user-vsock-pci,chardev=vsock0"
# A NIC for the data path, with no way out of the VM (restrict=on).
QEMU_OPTS+=" -netdev user,id=net0,restrict=on -device virtio-net-pci,netdev=net0"

log "booting $KVER (TCG: ${#ACCEL[@]})"
# A VM that dies before the scenario starts (no guest.log: the module was
# never loaded) is booted once more; any later failure counts.
for attempt in 1 2; do
	set +e
	timeout 600 vng --run "$KIMG" "${ACCEL[@]}" --memory "$MEM" --cpus 2 --verbose \
		--rwdir "$WORK" --qemu-opts="$QEMU_OPTS" \
		--exec "VW_DEBUG_SCAN=${VW_DEBUG_SCAN:-0} VW_SMOKE=${VW_SMOKE:-0} PROXY_WIFI=$PROXY_WIFI VSOCK_TEST=$VSOCK_TEST bash $HERE/guest.sh $WORK/module/vsock_wifi.ko $WORK $HAVE_SAE" \
		</dev/null >"$WORK/vng.log" 2>&1
	rc=$?
	set -e
	log "VM exited with $rc"
	[ "$rc" != 0 ] && [ ! -e "$WORK/guest.log" ] && [ "$attempt" = 1 ] || break
	log "the VM died before the scenario started: booting again"
	cp "$WORK/vng.log" "$WORK/vng-attempt1.log"
	if ! kill -0 "$VHOST_PID" 2>/dev/null; then
		start_vhost_device_vsock
		deadline=$((SECONDS + 20))
		until [ -S "$WORK/vhost.sock" ]; do
			[ "$SECONDS" -lt "$deadline" ] || { echo "FAIL: vhost-device-vsock did not restart"; exit 1; }
			sleep 0.2
		done
	fi
done
if [ "$rc" != 0 ]; then
	echo "--- guest output"
	cat "$WORK/guest.log" 2>/dev/null || cat "$WORK/vng.log"
	echo "--- vng"
	tail -30 "$WORK/vng.log"
	echo "--- proxy-wifi serve"
	tail -40 "$WORK/serve.log"
	echo "--- vhost-device-vsock"
	tail -20 "$WORK/vhost-device-vsock.log"
	echo "FAIL: guest-driver VM test"
	exit 1
fi
# The steps the guest went through, and what the AF_VSOCK step reached.
grep -E '\] == |over AF_VSOCK|_over_vsock_loopback passed' "$WORK/guest.log" || true
SKIPS=$(grep -c 'SKIPPED' "$WORK/guest.log" || true)
grep 'SKIPPED' "$WORK/guest.log" || true
grep -q '\] PASS$' "$WORK/guest.log" || { cat "$WORK/guest.log"; echo "FAIL: no PASS from the guest"; exit 1; }
if grep -E 'correct horse|wrong horse|open sesame|wrong sesame' "$WORK/serve.log"; then
	echo "FAIL: a secret reached the host's log"
	exit 1
fi
# WPA3-SAE, seen from the host: the guest's connect arrived as SAE (auth
# type 4) with a password the simulated backend accepted, and (iwd route)
# the wrong password was refused by the backend (status 15).
host_saw() {
	grep -q "$1" "$WORK/serve.log" || { echo "FAIL: the host never logged '$1'"; exit 1; }
}
if grep -q '== wpa_supplicant WPA3-SAE\|== iwd WPA3-SAE' "$WORK/guest.log"; then
	host_saw 'guest connect ssid=Sae3 security=wpa3-sae'
	host_saw 'guest connection up ssid=Sae3'
fi
if grep -q '== iwd WPA3-SAE, wrong password' "$WORK/guest.log"; then
	host_saw 'guest connection failed ssid=Sae3 status=15'
fi
if [ "$SKIPS" != 0 ]; then
	log "PASS with $SKIPS step(s) SKIPPED, not passed (guest-driver VM test, $((SECONDS - START)) s)"
else
	log "PASS (guest-driver VM test, $((SECONDS - START)) s)"
fi
