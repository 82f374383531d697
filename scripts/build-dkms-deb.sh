#!/usr/bin/env bash
# Builds the proxy-wifi-dkms Debian package (the vsock_wifi guest driver as
# DKMS source) from guest/linux: scripts/build-dkms-deb.sh [OUTPUT_DIR]
# (default target/deb). Needs dpkg-deb only; the package depends on dkms.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/target/deb}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)
[ -n "$VERSION" ] || { echo "no version in Cargo.toml" >&2; exit 1; }
PKG=proxy-wifi-dkms
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
chmod 0755 "$STAGE"

SRC=$STAGE/usr/src/proxy-wifi-$VERSION
install -d "$SRC" "$STAGE/DEBIAN" "$STAGE/usr/lib/modules-load.d" \
	"$STAGE/etc/modprobe.d" "$STAGE/usr/share/doc/$PKG"
install -m 0644 "$ROOT/guest/linux/vsock_wifi.c" "$ROOT/guest/linux/Kbuild" \
	"$ROOT/guest/linux/Makefile" "$SRC/"
sed "s/@VERSION@/$VERSION/" "$ROOT/guest/linux/dkms.conf" >"$SRC/dkms.conf"
install -m 0644 "$ROOT/guest/linux/vsock-wifi.modules-load.conf" \
	"$STAGE/usr/lib/modules-load.d/vsock-wifi.conf"
install -m 0644 "$ROOT/guest/linux/vsock-wifi.modprobe.conf" \
	"$STAGE/etc/modprobe.d/vsock-wifi.conf"
install -m 0644 "$ROOT/docs/guest-driver.md" "$STAGE/usr/share/doc/$PKG/README.md"
cat >"$STAGE/usr/share/doc/$PKG/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: proxy-wifi

Files: *
License: GPL-2.0-only or MIT
COPYRIGHT

cat >"$STAGE/DEBIAN/control" <<CONTROL
Package: $PKG
Version: $VERSION
Architecture: all
Maintainer: proxy-wifi maintainers <proxy-wifi@localhost>
Depends: dkms (>= 2.8), iproute2
Recommends: linux-headers-amd64 | linux-headers-generic | linux-headers
Section: kernel
Priority: optional
Description: Wi-Fi interface for Linux VMs backed by the host (proxy-wifi)
 vsock_wifi is a cfg80211 station driver: the VM's NetworkManager,
 wpa_supplicant and iw scan and connect through the proxy-wifi service on
 the host over AF_VSOCK, and data flows through the VM's virtio-net NIC.
 This package builds the module with DKMS for the installed kernels.
CONTROL
echo /etc/modprobe.d/vsock-wifi.conf >"$STAGE/DEBIAN/conffiles"

cat >"$STAGE/DEBIAN/postinst" <<POSTINST
#!/bin/sh
set -e
if [ "\$1" = configure ]; then
	dkms add -m proxy-wifi -v $VERSION >/dev/null 2>&1 || true
	# Build for every installed kernel that has headers; one failing
	# kernel does not fail the installation (dkms prints why).
	for k in /lib/modules/*; do
		k=\${k#/lib/modules/}
		[ -e "/lib/modules/\$k/build" ] || continue
		dkms install -m proxy-wifi -v $VERSION -k "\$k" || true
	done
fi
POSTINST
cat >"$STAGE/DEBIAN/prerm" <<PRERM
#!/bin/sh
set -e
dkms remove -m proxy-wifi -v $VERSION --all >/dev/null 2>&1 || true
PRERM
chmod 0755 "$STAGE/DEBIAN/postinst" "$STAGE/DEBIAN/prerm"

mkdir -p "$OUT"
DEB=$OUT/${PKG}_${VERSION}_all.deb
dpkg-deb --root-owner-group --build "$STAGE" "$DEB" >/dev/null
echo "$DEB"
