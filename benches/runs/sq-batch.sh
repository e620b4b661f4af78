#!/usr/bin/env bash
# BEAA's SqueezeNet (models/squeezenet.yaml, 3x32x32, spec weights), batch layout (slot i holds
# image i), at 128-bit on a full batch of 16,384 images (N=2^15): the 20 extracted CIFAR-10 test
# images followed by seeded random images, through keygen / encrypt / a spilling `hecc run` /
# decrypt, then compared with the plaintext model on every image.
# The server run keeps its live values within $BUDGET (default 14GiB) and spills the rest to
# $D/spill; it checkpoints every 10 minutes, and the same command started again resumes it.
# Needs about 35 GB of free disk (13.5 GB of input ciphertexts, up to about 20 GB of spill).
# Run from the repository root after `cargo build --release` and `bash scripts/fetch-datasets.sh`;
# results go to $OUT (default beaa-out/sq-batch-$IMAGES). IMAGES=N encrypts only the first N images
# (the run's work is the same: one ciphertext per input element whatever the batch fill); the
# batch-size curve is `scripts/batch_curve.py curve.svg DIR...` over runs with IMAGES=1024, 4096
# and 16384. VERIFY=1 runs the same work in one process with `hecc infer --verify` instead, which
# also gives the precision of every stage (the client/server flow's server holds no secret key).
set -euo pipefail
BUDGET=${BUDGET:-14GiB}
IMAGES=${IMAGES:-16384}
VERIFY=${VERIFY:-0}
if [ "$VERIFY" = 1 ]; then D=${OUT:-beaa-out/sq-batch-verify-$IMAGES}; else D=${OUT:-beaa-out/sq-batch-$IMAGES}; fi
mkdir -p "$D"; H=target/release/hecc
M=models/squeezenet.yaml
T="/usr/bin/time -f wall_%e_s_max_rss_%M_KB"
[ "$VERIFY" = 1 ] || [ -f $D/plan.hecc ] || $T $H compile $M --layout batch --spill-budget $BUDGET --time-passes -o $D/plan.hecc > $D/compile.txt 2>&1
if [ ! -f $D/images-idx4-ubyte ]; then
    D=$D IMAGES=$IMAGES ${PYTHON:-python3} - <<'PY'
import os
import numpy as np
d = os.environ["D"] + "/"; n = int(os.environ["IMAGES"])
raw = open("data/cifar10-test20/test20-images-idx4-ubyte", "rb").read()
real = np.frombuffer(raw[20:], dtype=np.uint8).reshape(-1, 32, 32, 3)
fill = np.random.default_rng(20261207).integers(0, 256, size=(max(n - len(real), 0), 32, 32, 3), dtype=np.uint8)
x = np.concatenate([real, fill])[:n]
with open(d + "images-idx4-ubyte", "wb") as f:
    f.write(bytes([0, 0, 8, 4]))
    for s in x.shape:
        f.write(int(s).to_bytes(4, "big"))
    f.write(x.tobytes())
PY
fi
IMG=$D/images-idx4-ubyte
if [ "$VERIFY" = 1 ]; then
    # One process (`hecc infer --verify`): the same spilling run, with probe outputs on up to
    # eight ciphertexts leaving each stage, decrypted and compared with the plaintext circuit
    # (precision per stage), and the logits with the plaintext model. No checkpoints.
    $T $H infer $M $IMG --layout batch --verify --spill-dir $D/spill --spill-budget $BUDGET \
        > $D/infer.txt 2>&1
    grep -v "^predictions" $D/infer.txt
    exit 0
fi
[ -f $D/keys/eval.keys ] || $T $H keygen $D/plan.hecc -o $D/keys > $D/keygen.txt 2>&1
[ -f $D/x.ct ] || $T $H encrypt $D/plan.hecc --keys $D/keys --input $IMG -o $D/x.ct > $D/encrypt.txt 2>&1
[ -f $D/y.ct ] || $T $H run $D/plan.hecc $D/x.ct --eval-keys $D/keys/eval.keys -o $D/y.ct \
    --spill-dir $D/spill --spill-budget $BUDGET --checkpoint-every 600 >> $D/run.txt 2>&1
$H decrypt $D/y.ct --secret-key $D/keys/secret.key -o $D/logits.npy --request $D/x.ct 2>&1 | grep -v "^predictions" > $D/decrypt.txt
[ -f $D/plain.npy ] || $T $H eval $M --input $IMG -o $D/plain.npy > $D/eval.txt 2>&1
D=$D ${PYTHON:-python3} - <<'PY' > $D/compare.txt
import os
import numpy as np
d = os.environ["D"] + "/"
enc = np.load(d + "logits.npy"); plain = np.load(d + "plain.npy")
n = min(enc.shape[0], plain.shape[0]); enc, plain = enc[:n], plain[:n]
top = np.abs(plain).max()
for name, sl in [("CIFAR-10 test images", slice(0, 20)), ("random images", slice(20, n)), ("all", slice(0, n))]:
    e, p = enc[sl], plain[sl]
    if len(e) == 0:
        continue
    err = np.abs(e - p).max()
    print("%s: %d images, argmax agreement %d / %d, largest logit error %.3e on logits up to %.3e (%.1f bits)"
          % (name, len(e), int((e.argmax(1) == p.argmax(1)).sum()), len(e), err, np.abs(p).max(), -np.log2(err / top)))
PY
cat $D/compare.txt
