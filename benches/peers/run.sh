#!/usr/bin/env bash
# Side-by-side CKKS timings: hecc's backend vs Microsoft SEAL and OpenFHE.
#
# Usage: benches/peers/run.sh [--quick] [--native] [--logn 13,14,15] [--out DIR]
#   --quick   smaller time budget per operation (0.3 s instead of 1 s)
#   --native  build hecc with RUSTFLAGS="-C target-cpu=native" (in target/native-cpu);
#             the default is the portable release build that `cargo build --release` gives
#   --logn    only these ring sizes (log2 N); default all of 13,14,15
#   --out     where the JSON results, logs and table.md go (default benches/peers/out)
#
# Creates the virtual environments on first use (benches/peers/.venv-seal with
# the default python3, benches/peers/.venv-openfhe with pyenv's CPython 3.10,
# since the openfhe wheel only imports there), runs hecc, SEAL and OpenFHE each
# in its own subprocess, single-threaded, and prints the hecc/peer ratio table.
# A library that cannot be installed or fails is reported as unavailable.
set -u
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
OUT="$HERE/out"
BUDGET=1.0
LOGN="13,14,15"
NATIVE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) BUDGET=0.3 ;;
    --native) NATIVE=1 ;;
    --logn) LOGN="$2"; shift ;;
    --out) OUT="$2"; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
rm -f "$OUT"/*.json "$OUT"/*.log "$OUT"/table.md "$OUT"/load.txt

export RAYON_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
export HECC_BENCH_BUDGET="$BUDGET"

check_load() {
  local load
  load=$(cut -d' ' -f1 /proc/loadavg)
  echo "machine load ($1): $(uptime)" | tee -a "$OUT/load.txt"
  if awk -v l="$load" 'BEGIN { exit !(l > 0.5) }'; then
    echo "WARNING: 1-minute load average $load > 0.5: other work is running, timings will be noisy." >&2
  fi
}
check_load "before"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(getconf _NPROCESSORS_ONLN) cores; each library single-threaded"

# ---- virtual environments ------------------------------------------------
SEAL_PY="$HERE/.venv-seal/bin/python"
if [ ! -x "$SEAL_PY" ] || ! "$SEAL_PY" -c "import seal, numpy" 2>/dev/null; then
  echo "setting up $HERE/.venv-seal (seal-python) ..."
  { python3 -m venv "$HERE/.venv-seal" && "$SEAL_PY" -m pip install -q seal-python numpy; } \
    > "$OUT/seal-install.log" 2>&1 || echo "SEAL install failed (see $OUT/seal-install.log)" >&2
fi
FHE_PY="$HERE/.venv-openfhe/bin/python"
if [ ! -x "$FHE_PY" ] || ! "$FHE_PY" -c "import openfhe" 2>/dev/null; then
  echo "setting up $HERE/.venv-openfhe (openfhe, CPython 3.10) ..."
  PY310=""
  if command -v pyenv > /dev/null; then
    PY310=$(ls -d "$(pyenv root)"/versions/3.10.*/bin/python 2>/dev/null | sort -V | tail -1)
  fi
  [ -z "$PY310" ] && PY310=$(command -v python3.10 || true)
  if [ -n "$PY310" ]; then
    { "$PY310" -m venv "$HERE/.venv-openfhe" && "$FHE_PY" -m pip install -q openfhe; } \
      > "$OUT/openfhe-install.log" 2>&1 || echo "OpenFHE install failed (see $OUT/openfhe-install.log)" >&2
  else
    echo "no CPython 3.10 found: OpenFHE unavailable" | tee "$OUT/openfhe-install.log" >&2
  fi
fi

# ---- hecc (build first, so compiling does not overlap the timings) -------
if [ "$NATIVE" = 1 ]; then
  HECC_TARGET="$ROOT/target/native-cpu"
  echo "building hecc's ckks_bench example with -C target-cpu=native (first time: several minutes) ..."
  build() { RUSTFLAGS="${RUSTFLAGS:-} -C target-cpu=native" CARGO_TARGET_DIR="$HECC_TARGET" \
      cargo build --release -q -p hecc-runtime --example ckks_bench; }
else
  HECC_TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
  echo "building hecc's ckks_bench example (portable release build) ..."
  build() { cargo build --release -q -p hecc-runtime --example ckks_bench; }
fi
if (cd "$ROOT" && build) > "$OUT/hecc-build.log" 2>&1; then
  HECC_BIN="$HECC_TARGET/release/examples/ckks_bench"
else
  HECC_BIN=""
  echo "hecc build failed (see $OUT/hecc-build.log)" >&2
fi

run_one() { # name, command...   (stdout -> $OUT/name.json, stderr -> $OUT/name.log)
  local name="$1"; shift
  local t0=$SECONDS
  if "$@" > "$OUT/$name.json.tmp" 2> "$OUT/$name.log"; then
    mv "$OUT/$name.json.tmp" "$OUT/$name.json"
    echo "  $name done in $((SECONDS - t0)) s"
  else
    local rc=$?
    if [ -s "$OUT/$name.json.tmp" ]; then
      mv "$OUT/$name.json.tmp" "$OUT/$name.json"
      echo "  $name exited with $rc (see $OUT/$name.log); its partial results are kept" >&2
    else
      echo "  $name FAILED (exit $rc, see $OUT/$name.log): reported as unavailable" >&2
      rm -f "$OUT/$name.json.tmp"
    fi
  fi
}

# One ring size at a time, the three libraries back to back, so that the
# timings compared in one table row are taken minutes apart at most.
for logn in ${LOGN//,/ }; do
  export HECC_BENCH_LOGN="$logn"
  echo "N=2^$logn: load averages $(cut -d' ' -f1-3 /proc/loadavg) at $(date -u +%H:%M:%SZ)" | tee -a "$OUT/load.txt"
  [ -n "$HECC_BIN" ] && run_one "hecc-$logn" "$HECC_BIN" --json
  [ -x "$SEAL_PY" ] && (cd "$HERE" && run_one "seal-$logn" "$SEAL_PY" seal_bench.py)
  [ -x "$FHE_PY" ] && (cd "$HERE" && run_one "openfhe-$logn" "$FHE_PY" openfhe_bench.py)
done

check_load "after"
echo
python3 "$HERE/compare.py" "$OUT"
echo
echo "raw results: $OUT/{hecc,seal,openfhe}-<logN>.json (+ .log); table: $OUT/table.md"
