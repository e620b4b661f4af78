#!/usr/bin/env bash
# The BEAA element-wise + KD LeNet-5 (MNIST), batch layout, 256 bundled images at 128-bit
# (N=2^14 with 33-bit scales, as in docs/training.md's encrypted table, whose run without spilling
# held 9596 MiB): the server run spilling within a 2 GiB budget.
# Run from the repository root after `cargo build --release` and `bash scripts/fetch-datasets.sh`;
# results go to $OUT (default beaa-out/spill-lenet).
set -euo pipefail
D=${OUT:-beaa-out/spill-lenet}; mkdir -p "$D"; H=target/release/hecc
M=models/beaa/lenet5-mnist-element-kd.yaml
IMG=models/data/mnist-t10k-first256-images-idx3-ubyte
T="/usr/bin/time -f wall_%e_s_max_rss_%M_KB"
[ -f $D/plan.hecc ] || $H compile $M --layout batch --batch 256 --scale-bits 33 --spill-budget 2GiB -o $D/plan.hecc > $D/compile.txt 2>&1
[ -f $D/keys/eval.keys ] || $T $H keygen $D/plan.hecc -o $D/keys > $D/keygen.txt 2>&1
[ -f $D/x.ct ] || $T $H encrypt $D/plan.hecc --keys $D/keys --input $IMG -o $D/x.ct > $D/encrypt.txt 2>&1
$T $H run $D/plan.hecc $D/x.ct --eval-keys $D/keys/eval.keys -o $D/y.ct --quiet --spill-dir $D/spill --spill-budget 2GiB > $D/run-2GiB.txt 2>&1
$H decrypt $D/y.ct --secret-key $D/keys/secret.key -o $D/logits.npy --request $D/x.ct 2>&1 | grep -v "^predictions" > $D/decrypt.txt
/usr/bin/python3 -c "
import numpy as np
l=np.load('$D/logits.npy'); lab=np.fromfile('models/data/mnist-t10k-first256-labels-idx1-ubyte',dtype=np.uint8)[8:8+l.shape[0]]
print('accuracy', int((l.argmax(1)==lab).sum()), '/', l.shape[0])" > $D/accuracy.txt
echo done
