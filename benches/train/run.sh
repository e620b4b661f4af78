#!/usr/bin/env bash
# Training speed of `hecc train` against PyTorch on the same networks, data, batch size and
# thread count, in one run: images per second of the training steps (forward, backward,
# update; test evaluation excluded), and the ratio.
#
# Usage: benches/train/run.sh DATA_DIR [THREADS]
#   DATA_DIR/mnist holds the MNIST IDX files (scripts/fetch-datasets.sh).
# Environment: HECC [target/release/hecc], PYTHON [/usr/bin/python3,
#   with torch, numpy and yaml], IMAGES_lenet5 [12000], IMAGES_squeezenet28 [4000].
set -euo pipefail
DATA=${1:?usage: $0 DATA_DIR [THREADS]}
THREADS=${2:-2}
HECC=${HECC:-target/release/hecc}
PYTHON=${PYTHON:-/usr/bin/python3}
HERE=$(dirname "$0")
MODELS=$HERE/../../models
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

echo "| network | activation | images | hecc train (images/s) | PyTorch (images/s) | hecc / PyTorch |"
echo "|---|---|---|---|---|---|"
for net in lenet5 squeezenet28; do
    iv=IMAGES_$net
    default=12000
    [ $net = squeezenet28 ] && default=4000
    n=${!iv:-$default}
    for act in quadratic relu; do
        flag=()
        [ $act = relu ] && flag=(--relu)
        ours=$(RAYON_NUM_THREADS=$THREADS "$HECC" train "$MODELS/$net.yaml" "${flag[@]}" \
            --data "$DATA/mnist" --epochs 1 --limit "$n" --final-eval-only --quiet \
            -o "$TMP/w.safetensors" --spec-out "$TMP/w.yaml" 2>&1 \
            | sed -n 's/.*training \([0-9]*\) images\/s.*/\1/p' | head -1)
        theirs=$("$PYTHON" "$HERE/torch_speed.py" "$MODELS/$net.yaml" "$DATA/mnist" --images "$n" \
            --threads "$THREADS" --act $act | sed -n 's/.*images\/s \([0-9]*\).*/\1/p')
        ratio=$(awk -v a="$ours" -v b="$theirs" 'BEGIN { printf "%.2f", a / b }')
        echo "| $net | $act | $n | $ours | $theirs | $ratio |"
    done
done
