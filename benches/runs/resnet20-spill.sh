#!/usr/bin/env bash
# ResNet-20 (CIFAR-10 shapes, random BN-normalised weights), channel layout, chebyshev:31, at
# 128-bit on the 20 extracted CIFAR-10 test images, through the client/server commands with the
# server run spilling to disk within a 3 GiB budget and checkpointing every 10 minutes. Run it
# again after a kill: the server step resumes from its checkpoint.
# Run from the repository root after `cargo build --release` and `bash scripts/fetch-datasets.sh`;
# results go to $OUT (default beaa-out/resnet20-spill).
set -euo pipefail
D=${OUT:-beaa-out/resnet20-spill}; mkdir -p "$D"; H=target/release/hecc
IMG=data/cifar10-test20/test20-images-idx4-ubyte
M=models/resnet20.yaml
T="/usr/bin/time -f wall_%e_s_max_rss_%M_KB"
[ -f $D/plan.hecc ] || $T $H compile $M --layout channel --activation chebyshev:31 --calibrate $IMG --batch 20 --spill-budget 3GiB -o $D/plan.hecc > $D/compile.txt 2>&1
[ -f $D/keys/eval.keys ] || $T $H keygen $D/plan.hecc -o $D/keys > $D/keygen.txt 2>&1
[ -f $D/x.ct ] || $T $H encrypt $D/plan.hecc --keys $D/keys --input $IMG -o $D/x.ct > $D/encrypt.txt 2>&1
[ -f $D/y.ct ] || $T $H run $D/plan.hecc $D/x.ct --eval-keys $D/keys/eval.keys -o $D/y.ct --spill-dir $D/spill --spill-budget 3GiB --checkpoint-every 600 >> $D/run.txt 2>&1
$H decrypt $D/y.ct --secret-key $D/keys/secret.key -o $D/logits.npy --request $D/x.ct > $D/decrypt.txt 2>&1
[ -f $D/plain.chebyshev-31.npy ] || $H eval $M --input $IMG --activation chebyshev:31 --calibrate $IMG -o $D/plain.npy > $D/eval.txt 2>&1
D=$D /usr/bin/python3 - <<'PY' > $D/compare.txt
import numpy as np
import os
d = os.environ["D"] + "/"
enc = np.load(d + "logits.npy"); approx = np.load(d + "plain.chebyshev-31.npy"); exact = np.load(d + "plain.npy")
print("images", enc.shape[0])
print("argmax agreement with the plaintext chebyshev:31 model", int((enc.argmax(1) == approx.argmax(1)).sum()), "/", enc.shape[0])
print("argmax agreement with the exact ReLU model", int((enc.argmax(1) == exact.argmax(1)).sum()), "/", enc.shape[0])
err = np.abs(enc - approx).max(); print("largest logit error %.3e on logits up to %.2f (%.1f bits)" % (err, np.abs(approx).max(), -np.log2(err / np.abs(approx).max())))
PY
cat $D/compare.txt
