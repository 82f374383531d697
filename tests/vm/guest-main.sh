#!/usr/bin/env bash
# Runs inside the VM (started by run.sh through vng --exec): loads the
# modules, runs the scenario with tests/vm/lib.sh available, and records
# that it finished. Not meant to be run by hand.
set -uo pipefail
logdir="$1"
# shellcheck disable=SC1091
source "$logdir/guest.env"
export VM_LOGDIR VM_REPO VM_NAME
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH
exec >"$VM_LOGDIR/guest.log" 2>&1
echo "guest: kernel $(uname -r), $(nproc) CPU, up $(cut -d' ' -f1 /proc/uptime)s"
rc=0
for m in "${VM_MODPROBE[@]}"; do
  # shellcheck disable=SC2086
  if ! modprobe $m; then
    echo "FAIL modprobe cannot load: $m" >>"$VM_LOGDIR/results"
    rc=1
  fi
done
if [ "$rc" = 0 ]; then
  cd "$VM_REPO" || exit 1
  bash -c 'source "$0/lib.sh" && source "$1" "${@:2}"' "$(dirname "$0")" "$VM_SCRIPT" "${VM_ARGS[@]}"
  rc=$?
fi
echo "guest: scenario exited $rc after $(cut -d' ' -f1 /proc/uptime)s of uptime"
echo "$rc" >"$VM_LOGDIR/finished"
sync
