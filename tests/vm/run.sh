#!/usr/bin/env bash
# Boots Debian's own kernel in a throw-away QEMU VM (virtme-ng over the live
# root filesystem, TCG, no network device) and runs one scenario script in
# it. See tests/vm/README.md for the interface; it is shared by several
# scenarios, keep it stable.
#
#   tests/vm/run.sh [options] SCRIPT [ARGS...]
#
# Exit status: 0 every check passed, 1 a check failed (or none ran, or the
# scenario did not finish), 2 usage or harness error, 77 skipped (the
# machine cannot run the VM; a `SKIPPED: <reason>` line says why).
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

usage() {
  sed -n '/^# Options/,/^$/p' "$here/README.md" >&2 || true
  echo "usage: $0 [--name N] [--modprobe 'MOD ARGS'] [--timeout S] [--memory M] [--cpus N] [--kernel PATH] [--logdir DIR] [--env K=V] [--kvm] SCRIPT [ARGS...]" >&2
  exit 2
}

name=""
timeout_s=600
memory=1536M
cpus=2
kernel="${VM_KERNEL:-}"
logdir=""
use_kvm="${VM_KVM:-0}"
modprobes=()
envs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --name) name="$2"; shift 2 ;;
    --modprobe) modprobes+=("$2"); shift 2 ;;
    --timeout) timeout_s="$2"; shift 2 ;;
    --memory) memory="$2"; shift 2 ;;
    --cpus) cpus="$2"; shift 2 ;;
    --kernel) kernel="$2"; shift 2 ;;
    --logdir) logdir="$2"; shift 2 ;;
    --env) envs+=("$2"); shift 2 ;;
    --kvm) use_kvm=1; shift ;;
    -h|--help) usage ;;
    --) shift; break ;;
    -*) echo "run.sh: unknown option $1" >&2; usage ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || usage
script="$1"; shift
[ -f "$script" ] || { echo "run.sh: no such scenario script: $script" >&2; exit 2; }
script="$(cd "$(dirname "$script")" && pwd)/$(basename "$script")"
[ -n "$name" ] || name="$(basename "$script" .sh)"

skip() { echo "SKIPPED: $*"; exit 77; }

# --- can this machine run the VM? -------------------------------------------
vng_bin="${VNG:-$(command -v vng || true)}"
[ -n "$vng_bin" ] || skip "virtme-ng (vng) is not installed (pip install virtme-ng)"
command -v qemu-system-x86_64 >/dev/null 2>&1 || skip "qemu-system-x86_64 is not installed"
if [ -z "$kernel" ]; then
  # Newest Debian kernel whose modules are installed (the guest loads them
  # from the host's /lib/modules).
  for k in $(ls -1 /boot/vmlinuz-* 2>/dev/null | sort -V -r); do
    if [ -d "/lib/modules/${k#/boot/vmlinuz-}/kernel" ]; then kernel="$k"; break; fi
  done
fi
[ -n "$kernel" ] && [ -r "$kernel" ] || skip "no readable kernel with modules in /boot (apt-get install linux-image-amd64)"
kver="${kernel#*/vmlinuz-}"
[ -d "/lib/modules/$kver" ] || skip "no modules for kernel $kver in /lib/modules"
[ -e /dev/kvm ] || [ "$use_kvm" = 0 ] || skip "--kvm asked for but /dev/kvm is missing"

# --- logs ---------------------------------------------------------------------
if [ -z "$logdir" ]; then
  logdir="${VM_LOGDIR_BASE:-${CARGO_TARGET_DIR:-$repo/target}/vm-logs}/$name-$(date +%Y%m%d-%H%M%S)"
fi
mkdir -p "$logdir" || { echo "run.sh: cannot create $logdir" >&2; exit 2; }
logdir="$(cd "$logdir" && pwd)"
: >"$logdir/results"
rm -f "$logdir/finished"

# What the guest side needs, as a file (no quoting through the kernel
# command line).
{
  printf 'VM_LOGDIR=%q\n' "$logdir"
  printf 'VM_REPO=%q\n' "$repo"
  printf 'VM_NAME=%q\n' "$name"
  printf 'VM_SCRIPT=%q\n' "$script"
  printf 'VM_ARGS=(' ; for a in "$@"; do printf '%q ' "$a"; done; printf ')\n'
  printf 'VM_MODPROBE=(' ; for m in "${modprobes[@]}"; do printf '%q ' "$m"; done; printf ')\n'
  for e in "${envs[@]}"; do printf 'export %q\n' "$e"; done
} >"$logdir/guest.env"

accel=(--disable-kvm)
[ "$use_kvm" = 1 ] && accel=()

echo "vm: $name: kernel $kver, $cpus CPU, $memory, $([ "$use_kvm" = 1 ] && echo KVM || echo TCG), logs in $logdir"
start=$(date +%s)
# No --network: the guest has only loopback. The log directory is the one
# place the guest writes to on the host.
timeout --kill-after=15 "$timeout_s" "$vng_bin" --run "$kernel" "${accel[@]}" \
  --user root --memory "$memory" --cpus "$cpus" --cwd "$repo" \
  --rwdir "$logdir" \
  --exec "bash $here/guest-main.sh $logdir" \
  </dev/null >"$logdir/console.log" 2>&1
vm_rc=$?
elapsed=$(( $(date +%s) - start ))

# --- summary ------------------------------------------------------------------
passed=$(grep -c '^PASS ' "$logdir/results" || true)
failed=$(grep -c '^FAIL ' "$logdir/results" || true)
skipped=$(grep -c '^SKIP ' "$logdir/results" || true)
echo "vm: $name: results"
sed 's/^/  /' "$logdir/results"
verdict=0
if [ ! -f "$logdir/finished" ]; then
  if [ "$vm_rc" = 124 ] || [ "$vm_rc" = 137 ]; then
    echo "vm: $name: FAILED: the VM did not finish within ${timeout_s}s"
  else
    echo "vm: $name: FAILED: the scenario did not finish (vng exit $vm_rc); last console lines:"
    tail -n 30 "$logdir/console.log" | sed 's/^/  | /'
  fi
  verdict=1
fi
script_rc=$(cat "$logdir/finished" 2>/dev/null || echo none)
if [ -f "$logdir/finished" ] && [ "$script_rc" != 0 ] && [ "$failed" = 0 ]; then
  echo "vm: $name: FAILED: the scenario script exited $script_rc (see $logdir/guest.log)"
  verdict=1
fi
[ "$failed" = 0 ] || verdict=1
if [ "$passed" = 0 ] && [ "$verdict" = 0 ]; then
  echo "vm: $name: FAILED: no check ran"
  verdict=1
fi
if [ "$verdict" = 0 ]; then
  echo "vm: $name: PASSED: $passed passed, $skipped skipped, in ${elapsed}s"
else
  echo "vm: $name: FAILED: $passed passed, $failed failed, $skipped skipped, in ${elapsed}s (logs: $logdir)"
fi
exit $verdict
