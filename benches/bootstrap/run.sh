#!/usr/bin/env bash
# CKKS bootstrapping, side by side: hecc's backend vs OpenFHE and DESILO.
#
# Usage: benches/bootstrap/run.sh [--log-n 16] [--slots 32768[,4096]] [--threads 1,2]
#            [--reps 1] [--chain K] [--only hecc,openfhe,desilo] [--out DIR] [--insecure]
#            [--desilo-key auto|small|medium|large] [--timeout SECONDS]
#   --log-n      log2 of the ring dimension (default 16)
#   --slots      slot counts, comma separated (default N/2); a sparse count such as 4096
#                runs where the library supports it (DESILO does not: reported as skipped)
#   --threads    thread counts, comma separated (default 1,2); sets OMP_NUM_THREADS and
#                RAYON_NUM_THREADS and passes --threads to the Python scripts
#   --reps       bootstraps timed per run; the median is reported (default 1)
#   --chain      also run K rounds of (bootstrap, x <- x*x - 0.5) and report the precision
#   --only       libraries to run (default hecc,openfhe,desilo)
#   --out        where results.jsonl, logs and table.md go (default benches/bootstrap/out)
#   --insecure   small test parameters (OpenFHE HEStd_NotSet; DESILO has none: skipped)
#   --desilo-key DESILO's bootstrap key: auto (default; medium if >= 20 GiB available,
#                else small), small, medium (~17 GB peak) or large
#   --timeout    per-run wall-clock limit in seconds (default 3600)
#
# Every library runs in its own subprocess, one run at a time (never two at once), for
# each slot count and thread count. A library that cannot be installed, built or run is
# recorded as unavailable and the others go on. Results: one JSON line per run in
# $OUT/results.jsonl; then table.py prints the markdown table (also $OUT/table.md).
# Progress goes to stderr. hecc is built once first with
#   cargo build --release -p hecc-runtime --example bootstrap_bench
# and its binary is then run directly; with --only not naming hecc nothing is built, and
# HECC_BIN=/path/to/bootstrap_bench in the environment runs that binary without building.
set -u
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
OUT="$HERE/out"
LOGN=16
SLOTS=""
THREADS="1,2"
REPS=1
CHAIN=0
ONLY="hecc,openfhe,desilo"
INSECURE=0
DESILO_KEY=auto
TIMEOUT=3600
while [ $# -gt 0 ]; do
  case "$1" in
    --log-n) LOGN="$2"; shift ;;
    --slots) SLOTS="$2"; shift ;;
    --threads) THREADS="$2"; shift ;;
    --reps) REPS="$2"; shift ;;
    --chain) CHAIN="$2"; shift ;;
    --only) ONLY="$2"; shift ;;
    --out) OUT="$2"; shift ;;
    --insecure) INSECURE=1 ;;
    --desilo-key) DESILO_KEY="$2"; shift ;;
    --timeout) TIMEOUT="$2"; shift ;;
    -h|--help) sed -n '2,/^set -u/{/^#/p}' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
[ -z "$SLOTS" ] && SLOTS=$(( (1 << LOGN) / 2 ))
wants() { case ",$ONLY," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
say() { echo "$@" >&2; }

mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
RESULTS="$OUT/results.jsonl"
rm -f "$RESULTS" "$OUT"/*.log "$OUT"/*.out "$OUT"/*.time "$OUT"/table.md "$OUT"/load.txt
export MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

# ---- machine load ---------------------------------------------------------
check_load() {
  local load
  load=$(cut -d' ' -f1 /proc/loadavg)
  say "machine load ($1): $(uptime)"
  echo "$1: $(uptime)" >> "$OUT/load.txt"
  # only before: afterwards the load average still counts our own runs
  if [ "$1" = before ] && awk -v l="$load" 'BEGIN { exit !(l > 0.5) }'; then
    say "WARNING: 1-minute load average $load > 0.5: other work is running, timings will be noisy."
  fi
}
# Share of all CPUs busy over one second (from /proc/stat). Between our own runs the
# 1-minute load average still remembers the previous run, so this is what is checked there.
cpu_busy_pct() {
  local c u n s i w q sq st t1 i1 t2 i2
  read -r c u n s i w q sq st _ < /proc/stat; t1=$((u+n+s+i+w+q+sq+st)); i1=$((i+w))
  sleep 1
  read -r c u n s i w q sq st _ < /proc/stat; t2=$((u+n+s+i+w+q+sq+st)); i2=$((i+w))
  echo $(( 100 * ((t2 - t1) - (i2 - i1)) / (t2 - t1 > 0 ? t2 - t1 : 1) ))
}
check_idle() {
  local busy
  busy=$(cpu_busy_pct)
  echo "before $1: cpu busy ${busy}% over 1 s; $(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT/load.txt"
  if [ "$busy" -gt 20 ]; then
    say "WARNING: ${busy}% of the CPUs busy just before $1: something else is running."
  fi
}
# CPU seconds, all cores together, spent on anything but idle since boot (/proc/stat).
HZ=$(getconf CLK_TCK 2>/dev/null || echo 100)
busy_jiffies() {
  local c u n s i w q sq st
  read -r c u n s i w q sq st _ < /proc/stat
  echo $((u + n + s + q + sq + st))
}
TIME_BIN=""
[ -x /usr/bin/time ] && TIME_BIN=/usr/bin/time
check_load "before"
say "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(getconf _NPROCESSORS_ONLN) cores;" \
    "memory available: $(awk '/MemAvailable/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"

# ---- virtual environments (created on first use) ---------------------------
FHE_PY=""
if wants openfhe; then
  for py in "$HERE/.venv-openfhe/bin/python" "$ROOT/benches/peers/.venv-openfhe/bin/python"; do
    if [ -x "$py" ] && "$py" -c "import openfhe, numpy" 2>/dev/null; then FHE_PY="$py"; break; fi
  done
  if [ -z "$FHE_PY" ]; then
    say "setting up $HERE/.venv-openfhe (openfhe + numpy, CPython 3.10) ..."
    PY310=""
    if command -v pyenv > /dev/null; then
      PY310=$(ls -d "$(pyenv root)"/versions/3.10.*/bin/python 2>/dev/null | sort -V | tail -1)
    fi
    [ -z "$PY310" ] && PY310=$(command -v python3.10 || true)
    if [ -n "$PY310" ]; then
      { "$PY310" -m venv "$HERE/.venv-openfhe" \
          && "$HERE/.venv-openfhe/bin/python" -m pip install -q openfhe numpy; } \
        > "$OUT/openfhe-install.log" 2>&1 || say "OpenFHE install failed (see $OUT/openfhe-install.log)"
      "$HERE/.venv-openfhe/bin/python" -c "import openfhe, numpy" 2>/dev/null \
        && FHE_PY="$HERE/.venv-openfhe/bin/python"
    else
      echo "no CPython 3.10 found (the openfhe wheel only imports there)" | tee "$OUT/openfhe-install.log" >&2
    fi
  fi
fi
DESILO_PY=""
if wants desilo; then
  py="$HERE/.venv-desilo/bin/python"
  if ! { [ -x "$py" ] && "$py" -c "import desilofhe, numpy" 2>/dev/null; }; then
    say "setting up $HERE/.venv-desilo (desilofhe CPU package + numpy) ..."
    { python3 -m venv "$HERE/.venv-desilo" && "$py" -m pip install -q desilofhe numpy; } \
      > "$OUT/desilo-install.log" 2>&1 || say "DESILO install failed (see $OUT/desilo-install.log)"
  fi
  "$py" -c "import desilofhe, numpy" 2>/dev/null && DESILO_PY="$py"
fi

# ---- hecc: build once, before anything is timed ----------------------------
# HECC_BIN=/path/to/bootstrap_bench (environment) skips the build and runs that binary.
HECC_BIN="${HECC_BIN:-}"
if wants hecc && [ -n "$HECC_BIN" ]; then
  say "hecc: using HECC_BIN=$HECC_BIN (not building)"
  [ -x "$HECC_BIN" ] || { say "HECC_BIN is not an executable file"; HECC_BIN=""; }
elif wants hecc; then
  say "building hecc's bootstrap_bench example (release) ..."
  if (cd "$ROOT" && cargo build --release -q -p hecc-runtime --example bootstrap_bench) \
      > "$OUT/hecc-build.log" 2>&1; then
    HECC_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/bootstrap_bench"
    [ -x "$HECC_BIN" ] || { say "hecc built but $HECC_BIN is missing"; HECC_BIN=""; }
  else
    say "hecc build failed (see $OUT/hecc-build.log): reported as unavailable"
  fi
fi

# ---- runs --------------------------------------------------------------------
# run_one LIB SLOTS THREADS COMMAND...: stdout's last JSON line goes to results.jsonl
# (with log_n/slots/threads filled in where the program left them out); a failure is
# recorded as {"library": LIB, "unavailable": "..."}.
run_one() {
  local lib="$1" slots="$2" threads="$3"; shift 3
  local tag="$lib-n$LOGN-s$slots-t$threads" t0=$SECONDS rc
  local b0 b1 u s e other="null" timing=()
  check_idle "$tag"
  say "[$(date -u +%H:%M:%SZ)] $tag: $*"
  # /usr/bin/time gives the run's own CPU time; compared with the whole machine's busy
  # time over the run, the difference is CPU that other work took meanwhile.
  [ -n "$TIME_BIN" ] && timing=("$TIME_BIN" -f "%U %S %e" -o "$OUT/$tag.time")
  b0=$(busy_jiffies)
  OMP_NUM_THREADS="$threads" RAYON_NUM_THREADS="$threads" \
    timeout "$TIMEOUT" "${timing[@]}" "$@" > "$OUT/$tag.out" 2> "$OUT/$tag.log"
  rc=$?
  b1=$(busy_jiffies)
  if [ -s "$OUT/$tag.time" ] && read -r u s e < <(tail -n 1 "$OUT/$tag.time") 2>/dev/null \
      && [[ "$u" =~ ^[0-9.]+$ ]]; then
    other=$(awk -v b=$((b1 - b0)) -v hz="$HZ" -v u="$u" -v s="$s" \
      'BEGIN { o = b / hz - u - s; printf "%.1f", (o < 0 ? 0 : o) }')
    echo "during $tag: ${e} s wall, ${u}+${s} s CPU of its own, ${other} s CPU of other work" >> "$OUT/load.txt"
    if awk -v o="$other" -v e="$e" 'BEGIN { exit !(o > 0.1 * e + 1) }'; then
      say "  WARNING: other work took ${other} CPU-seconds during this ${e} s run: its time is suspect."
    fi
  fi
  local defaults="{\"library\": \"$lib\", \"log_n\": $LOGN, \"slots\": $slots, \"threads\": $threads, \"other_cpu_s\": $other}"
  if python3 "$HERE/table.py" --append "$RESULTS" --defaults "$defaults" < "$OUT/$tag.out"; then
    [ "$rc" = 0 ] || say "  $tag exited with $rc after printing its result (see $OUT/$tag.log)"
    say "  $tag done in $((SECONDS - t0)) s: $(tail -n 1 "$RESULTS" | cut -c1-200)"
  else
    local why="exit $rc"
    [ "$rc" = 124 ] && why="timed out after $TIMEOUT s"
    [ "$rc" = 137 ] && why="killed (out of memory?)"
    say "  $tag FAILED ($why, see $OUT/$tag.log): reported as unavailable"
    tail -n 3 "$OUT/$tag.log" | sed 's/^/    /' >&2
    python3 "$HERE/table.py" --append "$RESULTS" --defaults "$defaults" \
      --unavailable "$why; see $tag.log" < /dev/null
  fi
}
unavailable() { # LIB SLOTS THREADS REASON
  python3 "$HERE/table.py" --append "$RESULTS" --unavailable "$4" \
    --defaults "{\"library\": \"$1\", \"log_n\": $LOGN, \"slots\": $2, \"threads\": $3}" < /dev/null
}

EXTRA=(--log-n "$LOGN" --reps "$REPS")
[ "$INSECURE" = 1 ] && EXTRA+=(--insecure)
[ "$CHAIN" -gt 0 ] && EXTRA+=(--chain "$CHAIN")
# Libraries back to back for one (slots, threads) pair, so that the times compared in one
# ratio are taken minutes apart at most.
for slots in ${SLOTS//,/ }; do
  for t in ${THREADS//,/ }; do
    if wants hecc; then
      if [ -n "$HECC_BIN" ]; then run_one hecc "$slots" "$t" "$HECC_BIN" --slots "$slots" "${EXTRA[@]}"
      else unavailable hecc "$slots" "$t" "build failed, see hecc-build.log"; fi
    fi
    if wants openfhe; then
      if [ -n "$FHE_PY" ]; then run_one openfhe "$slots" "$t" "$FHE_PY" "$HERE/openfhe_boot.py" \
          --slots "$slots" --threads "$t" "${EXTRA[@]}"
      else unavailable openfhe "$slots" "$t" "not installed, see openfhe-install.log"; fi
    fi
    if wants desilo; then
      if [ -n "$DESILO_PY" ]; then run_one desilo "$slots" "$t" "$DESILO_PY" "$HERE/desilo_boot.py" \
          --slots "$slots" --threads "$t" --key "$DESILO_KEY" "${EXTRA[@]}"
      else unavailable desilo "$slots" "$t" "not installed, see desilo-install.log"; fi
    fi
  done
done

check_load "after"
echo
python3 "$HERE/table.py" "$RESULTS" | tee "$OUT/table.md"
say
say "raw results: $RESULTS (one JSON line per run); logs: $OUT/<lib>-n<logN>-s<slots>-t<threads>.log"
