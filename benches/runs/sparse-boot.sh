#!/usr/bin/env bash
# Sparse-slot against full-slot bootstraps on one encrypted inference: the Fashion-MNIST
# ResNet-8 (models/resnet8_28.yaml, channel layout, chebyshev:31 ReLUs, ranges calibrated on the
# training set) at 128-bit on the first BATCH bundled test images (default 1: one image spans
# 1,024 of the 32,768 slots), once with the compiler's sparse bootstraps and once with
# --full-slot-bootstraps; both verified against the plaintext circuit. Run from the repository
# root after `cargo build --release` and `bash scripts/fetch-datasets.sh data`; results go to
# $OUT (default beaa-out/sparse-boot).
set -euo pipefail
D=${OUT:-beaa-out/sparse-boot}; mkdir -p "$D"; H=target/release/hecc
B=${BATCH:-1}
T="/usr/bin/time -f wall_%e_s_max_rss_%M_KB"
for mode in sparse full; do
    extra=""
    [ $mode = full ] && extra=--full-slot-bootstraps
    [ -s $D/$mode-b$B.txt ] && continue
    uptime > $D/$mode-b$B.load
    $T $H infer models/resnet8_28.yaml \
        --input models/data/fashion-mnist-t10k-first256-images-idx3-ubyte \
        --labels models/data/fashion-mnist-t10k-first256-labels-idx1-ubyte \
        --layout channel --activation chebyshev:31 \
        --calibrate data/fashion-mnist/train-images-idx3-ubyte \
        --batch $B --verify --quiet --min-agreement 0 $extra > $D/$mode-b$B.tmp 2>&1 \
        || echo "exit status $?" >> $D/$mode-b$B.tmp
    uptime >> $D/$mode-b$B.load
    mv $D/$mode-b$B.tmp $D/$mode-b$B.txt
done
grep -H -E "bootstrap|server|wall_|agree|bits|error" $D/*-b$B.txt
