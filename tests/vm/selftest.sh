# The harness's own check (run: tests/vm/run.sh --modprobe "mac80211_hwsim radios=2" tests/vm/selftest.sh):
# the Debian kernel booted, modules load, a system bus starts, and the guest
# has no network device to the outside.
vm_expect kernel-is-debian "uname -r: $(uname -r)" test -d "/lib/modules/$(uname -r)/kernel"
vm_expect hwsim-radios "$(ls /sys/class/ieee80211 2>/dev/null | wc -l) wiphys" \
  vm_wait_until 10 "2 hwsim radios" bash -c '[ "$(ls /sys/class/ieee80211 | wc -l)" -ge 2 ]'
vm_check system-bus vm_start_system_bus
no_outside() {
  local dev
  for dev in /sys/class/net/*; do
    dev=${dev##*/}
    case "$dev" in lo|wlan*|hwsim*) ;; *) echo "unexpected network device $dev"; return 1 ;; esac
  done
}
vm_check no-outside-network no_outside
