#!/usr/bin/env bash
# The plan's memory estimate against what a server run holds, per model and layout, at 128-bit:
# compile (--batch 16), keygen, encrypt, then `hecc run` under /usr/bin/time. One markdown row per
# case: the estimate of live values and with keys (the plan's report), the live bytes the executor
# held at its peak (its own count), and the process's resident peak.
#
#   bash benches/memory/table.sh [DATA_DIR] [OUT_DIR] [CASES]
#
# CASES: space-separated MODEL:LAYOUT (default: CryptoNets and LeNet-5 in both layouts and
# SqueezeNet in the channel layout; SqueezeNet's batch plan needs more than this machine has).
set -euo pipefail
DATA=${1:-data}
OUT=${2:-target/bench-memory}
CASES=${3:-"cryptonets:batch cryptonets:channel lenet5:batch lenet5:channel squeezenet:channel"}
H=${HECC:-target/release/hecc}
mkdir -p "$OUT"
echo "| model | layout | N | estimate: live | estimate: with keys | live at peak | resident peak | resident / estimate |"
echo "|---|---|---:|---:|---:|---:|---:|---:|"
for c in $CASES; do
    model=${c%%:*}; layout=${c##*:}; d="$OUT/$model-$layout"; mkdir -p "$d"
    if [ "$model" = squeezenet ]; then img="$DATA/cifar10-test20/test20-images-idx4-ubyte"; else img="$DATA/mnist/t10k-images-idx3-ubyte"; fi
    "$H" compile "models/$model.yaml" --layout "$layout" --batch 16 -o "$d/plan.hecc" > "$d/compile.txt" 2>&1
    rm -rf "$d/keys"
    "$H" keygen "$d/plan.hecc" -o "$d/keys" > "$d/keygen.txt" 2>&1
    "$H" encrypt "$d/plan.hecc" --keys "$d/keys" --input "$img" --limit 16 -o "$d/x.ct" > "$d/encrypt.txt" 2>&1
    /usr/bin/time -f "max_rss_kb %M" "$H" run "$d/plan.hecc" "$d/x.ct" --eval-keys "$d/keys/eval.keys" -o "$d/y.ct" > "$d/run.txt" 2>&1
    /usr/bin/python3 - "$d" "$model" "$layout" <<'PY'
import json, re, sys
d, model, layout = sys.argv[1:4]
plan = json.load(open(d + "/plan.hecc"))
s = plan["report"]["schedule"]
run = open(d + "/run.txt").read()
live = int(re.search(r"at most \d+ live ciphertexts \((\d+) MiB\)", run).group(1))
rss = int(re.search(r"max_rss_kb (\d+)", run).group(1)) / 1024
mib = lambda b: b / 2**20
est, tot = mib(s["peak"]["bytes"]), mib(s["total_bytes"])
print(f"| {model} | {layout} | 2^{plan['params']['log_n']} | {est:,.0f} MiB | {tot:,.0f} MiB | {live:,} MiB ({live / est:.2f}x) | {rss:,.0f} MiB | {rss / tot:.2f}x |")
PY
done
