# Helpers for scenario scripts that run inside the VM (sourced by
# guest-main.sh before the scenario; see tests/vm/README.md). Everything a
# scenario reports goes through vm_pass/vm_fail/vm_skip into
# $VM_LOGDIR/results, which run.sh summarises on the host.
#
# Rule: wait on state changes with vm_wait_until (a deadline, a short poll),
# never on bare sleeps.

VM_POLL="${VM_POLL:-0.2}"
declare -gA VM_PIDS=()

# Seconds since the VM booted, for log lines.
vm_uptime() { cut -d' ' -f1 /proc/uptime; }

# Milliseconds on a monotonic-enough clock (for durations inside the VM).
vm_now_ms() { date +%s%3N; }

vm_log() { printf '[%8s] %s\n' "$(vm_uptime)" "$*"; }

vm_pass() { local n="$1"; shift; echo "PASS $n${*:+ ($*)}" >>"$VM_LOGDIR/results"; vm_log "PASS $n $*"; }
vm_fail() { local n="$1"; shift; echo "FAIL $n${*:+: $*}" >>"$VM_LOGDIR/results"; vm_log "FAIL $n $*"; }
vm_skip() { local n="$1"; shift; echo "SKIP $n${*:+: $*}" >>"$VM_LOGDIR/results"; vm_log "SKIP $n $*"; }

# vm_check NAME CMD...: runs CMD (output to the guest log); PASS if it
# succeeds, FAIL otherwise. Returns CMD's status.
vm_check() {
  local n="$1"; shift
  if "$@"; then vm_pass "$n"; return 0; else local rc=$?; vm_fail "$n" "'$*' exited $rc"; return "$rc"; fi
}

# vm_expect NAME DETAIL CONDITION...: PASS if CONDITION succeeds, else FAIL
# with DETAIL (say what was seen).
vm_expect() {
  local n="$1" detail="$2"; shift 2
  if "$@"; then vm_pass "$n"; return 0; else vm_fail "$n" "$detail"; return 1; fi
}

# vm_wait_until SECONDS DESCRIPTION CMD...: polls CMD every $VM_POLL s until
# it succeeds (returns 0) or the deadline passes (logs, returns 1).
vm_wait_until() {
  local secs="$1" desc="$2"; shift 2
  local start now deadline
  start=$(vm_now_ms); deadline=$(( start + ${secs%.*} * 1000 ))
  while :; do
    if "$@" >/dev/null 2>&1; then
      now=$(vm_now_ms); vm_log "ok after $(( now - start )) ms: $desc"; return 0
    fi
    now=$(vm_now_ms)
    if [ "$now" -ge "$deadline" ]; then vm_log "timed out after ${secs}s: $desc"; return 1; fi
    sleep "$VM_POLL"
  done
}

# vm_retry ATTEMPTS DESCRIPTION CMD...: runs CMD up to ATTEMPTS times until
# it succeeds, for steps the real stack is known to drop (scans).
vm_retry() {
  local n="$1" desc="$2" i; shift 2
  for (( i = 1; i <= n; i++ )); do
    if "$@"; then return 0; fi
    vm_log "attempt $i/$n failed: $desc"
  done
  return 1
}

# vm_bg NAME CMD...: starts a daemon in the background, output to
# $VM_LOGDIR/NAME.log.
vm_bg() {
  local n="$1"; shift
  "$@" >>"$VM_LOGDIR/$n.log" 2>&1 &
  VM_PIDS[$n]=$!
  vm_log "started $n (pid ${VM_PIDS[$n]}): $*"
}

# vm_pid NAME: the pid vm_bg recorded.
vm_pid() { echo "${VM_PIDS[$1]:-}"; }

# vm_running NAME: whether the daemon is alive.
vm_running() { local p="${VM_PIDS[$1]:-}"; [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }

# vm_stop NAME [SIGNAL] [SECONDS]: signals the daemon and waits for it to
# exit (SIGKILL after the deadline). Returns 0 if it exited by itself.
vm_stop() {
  local n="$1" sig="${2:-TERM}" secs="${3:-10}" p="${VM_PIDS[$1]:-}"
  [ -n "$p" ] || return 0
  kill "-$sig" "$p" 2>/dev/null || true
  if vm_wait_until "$secs" "$n exits after SIG$sig" bash -c "! kill -0 $p"; then
    wait "$p" 2>/dev/null; unset "VM_PIDS[$n]"; return 0
  fi
  kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null; unset "VM_PIDS[$n]"; return 1
}

# vm_log_has NAME REGEX: whether $VM_LOGDIR/NAME.log matches (grep -E).
vm_log_has() { grep -Eq -- "$2" "$VM_LOGDIR/$1.log" 2>/dev/null; }

# vm_log_count NAME REGEX: how many lines of $VM_LOGDIR/NAME.log match.
vm_log_count() { grep -Ec -- "$2" "$VM_LOGDIR/$1.log" 2>/dev/null || true; }

# vm_metric NAME VALUE UNIT: records a measurement in $VM_LOGDIR/metrics.
vm_metric() { echo "$1 $2 $3" >>"$VM_LOGDIR/metrics"; vm_log "metric $1 = $2 $3"; }

# vm_start_system_bus: a D-Bus system bus (no systemd in the VM), for
# NetworkManager, iwd, wpa_supplicant.
vm_start_system_bus() {
  mkdir -p /run/dbus
  rm -f /run/dbus/pid /run/dbus/system_bus_socket
  dbus-daemon --system --fork --nopidfile >>"$VM_LOGDIR/dbus.log" 2>&1 || return 1
  vm_wait_until 10 "system bus socket" test -S /run/dbus/system_bus_socket
}
