#!/usr/bin/env bash
# Runs every benchmark recorded in BENCHMARKS.md, in the `profiling` profile
# (release with line tables and symbols, so perf can attribute), one after
# the other (they must not overlap: each measures against the others' CPU).
#   scripts/bench.sh            # everything (about 3 minutes)
#   scripts/bench.sh e2e        # one of: codec handler e2e guests e2e-headline
#   scripts/bench.sh e2e-headline   # BENCHMARKS.md's headline table only (under 4 minutes
#                                   # with the profiling build present; the build adds ~5)
set -euo pipefail
cd "$(dirname "$0")/.."

echo "machine: $(nproc) x $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-), kernel $(uname -r), $(date -u +%FT%TZ)"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) (other builds on the machine skew the figures)"

run() {
  case "$1" in
    codec) cargo bench --profile profiling --bench codec -- --warm-up-time 1 --measurement-time 3 ;;
    handler) cargo bench --profile profiling --bench handler -- --warm-up-time 1 --measurement-time 3 ;;
    e2e) cargo bench --profile profiling --bench e2e -- --requests 20000 ;;
    e2e-headline) cargo bench --profile profiling --bench e2e -- --headline ;;
    guests) cargo bench --profile profiling --bench guests -- --guests 256 --clients 32 --requests 50000 ;;
    *) echo "unknown benchmark $1 (codec handler e2e guests e2e-headline)" >&2; exit 2 ;;
  esac
}

if [ $# -eq 0 ]; then set -- codec handler e2e guests; fi
for b in "$@"; do
  printf '\n==== %s\n' "$b"
  run "$b"
done
