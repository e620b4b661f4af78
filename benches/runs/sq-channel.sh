#!/usr/bin/env bash
# BEAA's SqueezeNet (models/squeezenet.yaml, 3x32x32, spec weights), channel layout, at 128-bit
# on the 20 extracted CIFAR-10 test images, through keygen / encrypt / run / decrypt, then
# compared with the plaintext model. Dense layers split into partial sums by the compiler.
# Run from the repository root after `cargo build --release` and `bash scripts/fetch-datasets.sh`;
# results go to $OUT (default beaa-out/sq-channel).
set -euo pipefail
D=${OUT:-beaa-out/sq-channel}; mkdir -p "$D"; H=target/release/hecc
IMG=data/cifar10-test20/test20-images-idx4-ubyte
M=models/squeezenet.yaml
T="/usr/bin/time -f wall_%e_s_max_rss_%M_KB"
[ -f $D/plan.hecc ] || $T $H compile $M --layout channel --time-passes -o $D/plan.hecc > $D/compile.txt 2>&1
[ -f $D/keys/eval.keys ] || $T $H keygen $D/plan.hecc -o $D/keys > $D/keygen.txt 2>&1
[ -f $D/x.ct ] || $T $H encrypt $D/plan.hecc --keys $D/keys --input $IMG -o $D/x.ct > $D/encrypt.txt 2>&1
[ -f $D/y.ct ] || $T $H run $D/plan.hecc $D/x.ct --eval-keys $D/keys/eval.keys -o $D/y.ct >> $D/run.txt 2>&1
$H decrypt $D/y.ct --secret-key $D/keys/secret.key -o $D/logits.npy --request $D/x.ct > $D/decrypt.txt 2>&1
[ -f $D/plain.npy ] || $H eval $M --input $IMG -o $D/plain.npy > $D/eval.txt 2>&1
D=$D /usr/bin/python3 - <<'PY' > $D/compare.txt
import numpy as np
import os
d = os.environ["D"] + "/"
enc = np.load(d + "logits.npy"); plain = np.load(d + "plain.npy")
n = min(enc.shape[0], plain.shape[0]); enc, plain = enc[:n], plain[:n]
print("images", n)
print("argmax agreement with the plaintext model", int((enc.argmax(1) == plain.argmax(1)).sum()), "/", n)
err = np.abs(enc - plain).max(); top = np.abs(plain).max()
print("largest logit error %.3e on logits up to %.3e (%.1f bits)" % (err, top, -np.log2(err / top)))
PY
cat $D/compare.txt
