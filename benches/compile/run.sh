#!/usr/bin/env bash
# Compile time of every reference model in both layouts, one run each.
# Usage: bash benches/compile/run.sh [OUTDIR]   (after `cargo build --release`)
# Prints one line per model and layout: seconds of wall time and ok/FAIL; the plans and the
# compile output land in OUTDIR (default: a fresh temporary folder).
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${1:-$(mktemp -d)}
mkdir -p "$out"
bin=./target/release/hecc
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 1; }
one() {
    local name=$1; shift
    local t0 t1 status
    t0=$(date +%s.%N)
    if "$bin" compile "$@" -o "$out/$name.json" > "$out/$name.txt" 2>&1; then status=ok; else status=FAIL; fi
    t1=$(date +%s.%N)
    printf "%-28s %8.2f s  %s\n" "$name" "$(echo "$t1 - $t0" | bc)" "$status"
}
echo "# $(date -u +%FT%TZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
for layout in batch channel; do
    one "cryptonets-$layout" models/cryptonets.yaml --layout "$layout"
    one "lenet5-$layout" models/lenet5.yaml --layout "$layout"
    one "survey-$layout" models/survey_relu.yaml --layout "$layout" --activation minimax:8
    one "beaa-mnist-$layout" models/beaa/lenet5-mnist-element-kd.yaml --layout "$layout"
    one "squeezenet-$layout" models/squeezenet.yaml --layout "$layout"
    one "onnx-lenet5-$layout" models/onnx/export/lenet5_torch.onnx --layout "$layout" --activation square
    one "onnx-resnet-$layout" models/onnx/export/resnet_torch.onnx --layout "$layout" --activation square
    one "onnx-mlp-$layout" models/onnx/export/mlp_sklearn.onnx --layout "$layout" --activation square
done
