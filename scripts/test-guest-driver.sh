#!/usr/bin/env bash
# The vsock_wifi guest driver (issue 19): installs what its test needs
# (idempotently), builds the module warning-free (W=1) against every
# installed Debian kernel header tree and against Debian 11's 5.10 headers
# (bullseye archive), builds the proxy-wifi-dkms package and
# builds it once through DKMS (private tree), then runs the VM test
# (tests/vm/guest-driver/run.sh) on Debian 12's kernel, then a short VM
# run on bullseye's 5.10 (GUEST_DRIVER_510_VM=0 leaves it out, reported as
# SKIPPED). Measured: 12 minutes on a 2-core machine loaded by other VMs
# (load average 15: full VM test 348 s, 5.10 VM 278 s, builds, DKMS and the
# one-time 5.10 download the rest); a quiet machine runs VMs about 4 times
# faster. Plus a one-time `cargo install vhost-device-vsock` (about 2.5
# minutes).
# Prints SKIPPED: <reason> (exit 0) when the VM cannot run here.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

log() { printf '\n== guest-driver: %s\n' "$*"; }
if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi

# --- packages -----------------------------------------------------------------
need=()
dpkg -s linux-image-amd64 >/dev/null 2>&1 || need+=(linux-image-amd64)
dpkg -s linux-headers-amd64 >/dev/null 2>&1 || need+=(linux-headers-amd64)
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v iw >/dev/null || need+=(iw)
command -v wpa_supplicant >/dev/null || need+=(wpasupplicant)
command -v NetworkManager >/dev/null || need+=(network-manager)
command -v dbus-daemon >/dev/null || need+=(dbus-daemon)
command -v dbus-send >/dev/null || need+=(dbus-bin)
command -v busctl >/dev/null || need+=(systemd)
[ -x /usr/libexec/iwd ] || need+=(iwd)
command -v dkms >/dev/null || need+=(dkms)
command -v udevadm >/dev/null || need+=(udev)
command -v modprobe >/dev/null || need+=(kmod)
command -v pip3 >/dev/null || command -v pip >/dev/null || need+=(python3-pip)
if [ "${#need[@]}" -gt 0 ]; then
	log "installing ${need[*]}"
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=900 install -y -qq \
		--no-install-recommends "${need[@]}"
fi
if ! command -v vng >/dev/null; then
	log "installing virtme-ng (PyPI)"
	pip3 install --quiet virtme-ng 2>/dev/null || pip install --quiet virtme-ng ||
		pip3 install --quiet --break-system-packages virtme-ng
fi

# scripts/test.sh runs the apt and pip installs of every VM test first, one
# at a time (they are not safe to run twice at once), then the VM tests in
# the background beside other steps.
if [ "${VM_TEST_PREPARE_ONLY:-0}" = 1 ]; then exit 0; fi

# cargo locks what it shares, so this one may build beside other steps.
if ! command -v vhost-device-vsock >/dev/null; then
	log "installing vhost-device-vsock (crates.io, one-time)"
	start=$SECONDS
	cargo install --locked --quiet vhost-device-vsock
	log "vhost-device-vsock installed in $((SECONDS - start)) s"
fi

# --- the module: warning-free against every installed header tree --------------
for build in /lib/modules/*/build; do
	[ -e "$build/Makefile" ] || continue
	kver=$(basename "$(dirname "$build")")
	log "building vsock_wifi.ko for $kver (W=1)"
	tmp=$(mktemp -d)
	cp -a guest/linux/. "$tmp/"
	if ! make -s -C "$build" M="$tmp" W=1 modules >"$tmp/build.log" 2>&1 ||
		grep -E 'warning:|error:' "$tmp/build.log"; then
		cat "$tmp/build.log"
		echo "FAIL: vsock_wifi does not build warning-free against $kver"
		exit 1
	fi
	rm -rf "$tmp"
done

# --- kernel 5.10: Debian 11's headers, from the bullseye archive ----------------
# Debian 12 has no 5.10 headers. The bullseye archive's linux-headers-amd64
# (with its -common half, linux-kbuild-5.10 and the gcc-10 it was built
# with) and the matching kernel image are downloaded once with a private apt
# state (nothing is installed on this machine: the packages are unpacked
# under the target directory); the module is built against them with W=1,
# as for the installed kernels, and the VM test boots that kernel once
# (load, scan, unload) after the full scenario.
BULLSEYE=${CARGO_TARGET_DIR:-$ROOT/target}/linux-5.10
build_bullseye_510() {
	local cache=$BULLSEYE
	local root=$cache/root hdr
	local apt_opts=(-o "Dir::Etc::sourcelist=$cache/apt/sources.list" -o Dir::Etc::sourceparts=-
		-o "Dir::State::Lists=$cache/apt/lists" -o "Dir::Cache=$cache/apt/cache"
		-o "Dir::State::status=$cache/apt/status" -o APT::Architecture=amd64
		-o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false
		-o Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false
		-o Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false)
	if [ ! -s "$cache/headers" ]; then
		log "fetching Debian 11's 5.10 headers and gcc-10 (bullseye archive, one-time)"
		rm -rf "$cache"
		mkdir -p "$cache/apt/lists/partial" "$cache/apt/cache/archives/partial" "$cache/debs"
		: >"$cache/apt/status"
		cat >"$cache/apt/sources.list" <<-EOF
			deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bullseye main
			deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bullseye-security main
		EOF
		if ! timeout 300 apt-get -qq "${apt_opts[@]}" update >"$cache/apt.log" 2>&1; then
			echo "SKIPPED: kernel 5.10 build (the bullseye archive is unreachable: $(tail -1 "$cache/apt.log"))"
			return 0
		fi
		hdr=$(apt-cache "${apt_opts[@]}" depends linux-headers-amd64 |
			sed -n 's/^ *Depends: \(linux-headers-5\.10[^ ]*-amd64\)$/\1/p' | head -1)
		if [ -z "$hdr" ]; then
			# apt-get update exits 0 when it only warns (host unreachable).
			echo "SKIPPED: kernel 5.10 build (no 5.10 linux-headers-amd64 from the bullseye archive: $(tail -1 "$cache/apt.log"))"
			return 0
		fi
		if ! (cd "$cache/debs" && timeout 300 apt-get -qq "${apt_opts[@]}" download \
			"$hdr" "${hdr%-amd64}-common" linux-kbuild-5.10 gcc-10 cpp-10 libgcc-10-dev) \
			>>"$cache/apt.log" 2>&1; then
			echo "SKIPPED: kernel 5.10 build (download from the bullseye archive failed: $(tail -1 "$cache/apt.log"))"
			return 0
		fi
		if ! (cd "$cache/debs" && timeout 300 apt-get -qq "${apt_opts[@]}" download \
			"${hdr/linux-headers-/linux-image-}-unsigned") >>"$cache/apt.log" 2>&1; then
			echo "SKIPPED: kernel 5.10 build (download from the bullseye archive failed: $(tail -1 "$cache/apt.log"))"
			return 0
		fi
		for deb in "$cache"/debs/linux-image-*.deb; do dpkg-deb -x "$deb" "$cache/image"; done
		rm -f "$cache"/debs/linux-image-*.deb
		for deb in "$cache"/debs/*.deb; do dpkg-deb -x "$deb" "$root"; done
		rm -rf "$cache/debs" "$cache/apt/cache" "$cache/apt/lists"
		# The package's Makefile includes its -common half by absolute path.
		sed -i "s#^include /usr/src/#include $root/usr/src/#" "$root/usr/src/$hdr/Makefile"
		echo "$hdr" >"$cache/headers"
	fi
	hdr=$(cat "$cache/headers")
	log "building vsock_wifi.ko for ${hdr#linux-headers-} (W=1, gcc-10)"
	tmp=$(mktemp -d)
	cp -a guest/linux/. "$tmp/"
	if ! PATH=$root/usr/bin:$PATH make -s -C "$root/usr/src/$hdr" M="$tmp" W=1 modules \
		>"$tmp/build.log" 2>&1 || grep -E 'warning:|error:' "$tmp/build.log"; then
		cat "$tmp/build.log"
		echo "FAIL: vsock_wifi does not build warning-free against ${hdr#linux-headers-}"
		exit 1
	fi
	modinfo -F vermagic "$tmp/vsock_wifi.ko" | grep -q '^5\.10\.' ||
		{ echo "FAIL: the 5.10 build has vermagic $(modinfo -F vermagic "$tmp/vsock_wifi.ko")"; exit 1; }
	rm -rf "$tmp"
}
build_bullseye_510

# --- the Debian package, and one DKMS build from it ------------------------------
log "building the proxy-wifi-dkms package"
deb=$(scripts/build-dkms-deb.sh "${CARGO_TARGET_DIR:-$ROOT/target}/deb")
contents=$(dpkg-deb -c "$deb")
for f in dkms.conf vsock_wifi.c Kbuild Makefile modules-load.d/vsock-wifi.conf modprobe.d/vsock-wifi.conf; do
	grep -q "$f\$" <<<"$contents" || { echo "FAIL: $deb lacks $f"; exit 1; }
done
kver=$(dpkg-query -W -f='${Depends}' linux-image-amd64 | sed -n 's/^linux-image-\([^ ,]*\).*/\1/p')
tmp=$(mktemp -d)
dpkg-deb -x "$deb" "$tmp/root"
version=$(dpkg-deb -f "$deb" Version)
mkdir -p "$tmp/dkms"
# A private DKMS tree: nothing is installed on this machine.
if ! dkms build -m proxy-wifi -v "$version" -k "$kver" --dkmstree "$tmp/dkms" \
	--sourcetree "$tmp/root/usr/src" >"$tmp/dkms.log" 2>&1 ||
	! find "$tmp/dkms" -name 'vsock_wifi.ko*' | grep -q .; then
	cat "$tmp/dkms.log"
	echo "FAIL: dkms build of the package's source"
	exit 1
fi
rm -rf "$tmp"
log "package $deb builds with DKMS for $kver"

# --- the VM test -----------------------------------------------------------------
log "VM test"
tests/vm/guest-driver/run.sh
if [ "${GUEST_DRIVER_510_VM:-1}" = 0 ]; then
	echo "SKIPPED: VM run on kernel 5.10 (GUEST_DRIVER_510_VM=0)"
elif [ -s "$BULLSEYE/headers" ]; then
	hdr=$(cat "$BULLSEYE/headers")
	log "VM test on ${hdr#linux-headers-} (load, scan, unload)"
	PATH=$BULLSEYE/root/usr/bin:$PATH VW_SMOKE=1 \
		VW_KIMG="$BULLSEYE/image/boot/vmlinuz-${hdr#linux-headers-}" \
		VW_KBUILD="$BULLSEYE/root/usr/src/$hdr" tests/vm/guest-driver/run.sh
fi
