# Sourced by the VM end-to-end test scripts (scripts/test-vm-*.sh): what
# every one of them needs on this machine, installed only when missing, and
# the run of the VM itself.
#
#   . scripts/lib/vm-test.sh
#   vm_need_command wpa_supplicant wpasupplicant   # command, package(s)
#   vm_need_file /usr/libexec/iwd iwd              # file, package(s)
#   vm_prepare                                     # install what is missing
#   ...                                            # build the binary
#   vm_run "VM x test" --name x ... tests/vm/x.sh  # run it, exit 0 or 1
#
# The caller defines `log MESSAGE` and `skip REASON` (prints
# `SKIPPED: <reason>` and exits 0). With VM_TEST_PREPARE_ONLY=1,
# vm_prepare exits 0 once everything is installed: scripts/test.sh runs
# the installs of every VM test first, one at a time (apt and pip are not
# safe to run twice at once), then the VM tests in the background.

vm_need=()

# Adds packages to install unless the command is on PATH.
vm_need_command() {
  local cmd=$1
  shift
  command -v "$cmd" >/dev/null 2>&1 || vm_need+=("$@")
}

# Adds packages to install unless the file is executable.
vm_need_file() {
  local file=$1
  shift
  [ -x "$file" ] || vm_need+=("$@")
}

# Whether a kernel image with its modules is installed (what the VM boots).
vm_has_kernel() {
  local k
  for k in /boot/vmlinuz-*; do [ -d "/lib/modules/${k#/boot/vmlinuz-}/kernel" ] && return 0; done
  return 1
}

# What every VM test needs: QEMU, a kernel, the VM's busybox, hostapd for
# its access points, iw, jq, a D-Bus daemon, modprobe and Python.
vm_need_command qemu-system-x86_64 qemu-system-x86
vm_has_kernel || vm_need+=(linux-image-amd64)
vm_need_command busybox busybox-static
vm_need_command hostapd hostapd
vm_need_command iw iw
vm_need_command jq jq
vm_need_command dbus-daemon dbus-daemon
vm_need_command modprobe kmod
vm_need_command python3 python3 python3-pip

# Installs what is missing (apt, then virtme-ng with pip); skips the test
# when it cannot. Exits 0 afterwards with VM_TEST_PREPARE_ONLY=1.
vm_prepare() {
  if [ "${#vm_need[@]}" -gt 0 ]; then
    local sudo
    if [ "$(id -u)" = 0 ]; then sudo=; elif sudo -n true 2>/dev/null; then sudo=sudo; else
      skip "missing ${vm_need[*]} and no root to install them"; fi
    log "installing ${vm_need[*]}"
    # The daemons are only run inside the VM: keep apt from starting
    # NetworkManager, iwd or hostapd on this machine.
    local policy_made=0 apt_rc
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null &&
        $sudo chmod +x /usr/sbin/policy-rc.d && policy_made=1
    fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=900 install -y -qq \
      --no-install-recommends "${vm_need[@]}"
    apt_rc=$?
    [ "$policy_made" = 1 ] && $sudo rm -f /usr/sbin/policy-rc.d
    [ "$apt_rc" = 0 ] || skip "apt-get install ${vm_need[*]} failed"
  fi
  if ! command -v vng >/dev/null 2>&1; then
    log "installing virtme-ng (pip)"
    python3 -m pip install -q virtme-ng 2>/dev/null ||
      python3 -m pip install -q --break-system-packages virtme-ng ||
      skip "pip install virtme-ng failed"
    hash -r
    command -v vng >/dev/null 2>&1 || export PATH="$HOME/.local/bin:$PATH"
    command -v vng >/dev/null 2>&1 || skip "vng not on PATH after pip install"
  fi
  if [ "${VM_TEST_PREPARE_ONLY:-0}" = 1 ]; then exit 0; fi
}

# Runs tests/vm/run.sh with the arguments given, prints its wall time under
# LABEL, and exits: 0 when it passed or printed SKIPPED (exit 77), else 1.
vm_run() {
  local label=$1 start rc
  shift
  start=$(date +%s)
  tests/vm/run.sh "$@"
  rc=$?
  echo "$label: $(( $(date +%s) - start )) s wall time"
  case "$rc" in
    0 | 77) exit 0 ;;
    *) exit 1 ;;
  esac
}
