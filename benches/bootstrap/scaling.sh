#!/usr/bin/env bash
# hecc's bootstrap alone, across thread counts (how well a bootstrap uses the cores), plus the
# 10-round chained precision and a sparse-slot run at the largest thread count.
#
# Usage: benches/bootstrap/scaling.sh [--bin PATH] [--threads 1,2,4,8,16] [--out DIR]
#   --bin      a built bootstrap_bench (default: build it with cargo)
#   --threads  thread counts (default 1,2 and every power of two up to the core count)
#   --out      where results.jsonl and the logs go (default benches/bootstrap/out-scaling)
# Prints one JSON line per run (also in $OUT/results.jsonl); progress goes to stderr.
set -u
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
BIN=""
OUT="$HERE/out-scaling"
CORES=$(getconf _NPROCESSORS_ONLN)
THREADS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) BIN="$2"; shift ;;
    --threads) THREADS="$2"; shift ;;
    --out) OUT="$2"; shift ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
if [ -z "$THREADS" ]; then
  THREADS="1"; t=2
  while [ "$t" -le "$CORES" ]; do THREADS="$THREADS,$t"; t=$((t * 2)); done
fi
if [ -z "$BIN" ]; then
  (cd "$ROOT" && cargo build --release -q -p hecc-runtime --example bootstrap_bench) || exit 1
  BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/bootstrap_bench"
fi
mkdir -p "$OUT"
: > "$OUT/results.jsonl"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $CORES cores; $(uptime)" >&2
run() {
  local name="$1"; shift
  echo "[$(date -u +%H:%M:%SZ)] $name: $*" >&2
  "$@" 2> "$OUT/$name.log" | tee -a "$OUT/results.jsonl"
}
IFS=, read -ra TS <<< "$THREADS"
for t in "${TS[@]}"; do
  RAYON_NUM_THREADS=$t run "full-t$t" "$BIN" --log-n 16 --reps 2
done
MAX="${TS[${#TS[@]}-1]}"
RAYON_NUM_THREADS=$MAX run "sparse4096-t$MAX" "$BIN" --log-n 16 --slots 4096 --reps 2
RAYON_NUM_THREADS=$MAX run "offset-t$MAX" "$BIN" --log-n 16 --reps 1 --offset 0.5
RAYON_NUM_THREADS=$MAX run "chain10-t$MAX" "$BIN" --log-n 16 --reps 1 --chain 10
echo "done: $OUT/results.jsonl" >&2
