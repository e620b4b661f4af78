#!/usr/bin/env bash
# CryptoNets, batch layout, 8192 MNIST images at 128-bit: a run without and with spilling.
# Run from the repository root after `cargo build --release` and `bash scripts/fetch-datasets.sh`;
# results go to $OUT (default beaa-out/spill-cn).
set -euo pipefail
D=${OUT:-beaa-out/spill-cn}; mkdir -p "$D"; H=target/release/hecc
$H compile models/cryptonets.yaml --layout batch --batch 8192 --spill-budget 512MiB -o $D/plan.hecc > $D/compile.txt 2>&1
$H compile models/cryptonets.yaml --layout batch --batch 8192 --spill-budget 128MiB -o $D/plan128.hecc > $D/compile128.txt 2>&1
[ -f $D/keys/eval.keys ] || $H keygen $D/plan.hecc -o $D/keys > $D/keygen.txt 2>&1
[ -f $D/x.ct ] || $H encrypt $D/plan.hecc --keys $D/keys --input data/mnist/t10k-images-idx3-ubyte --limit 8192 -o $D/x.ct > $D/encrypt.txt 2>&1
for r in 1 2; do
/usr/bin/time -f "wall %e s, max rss %M KB" $H run $D/plan.hecc $D/x.ct --eval-keys $D/keys/eval.keys -o $D/y0.ct --quiet > $D/run-nospill-$r.txt 2>&1
for b in 512MiB 128MiB; do
/usr/bin/time -f "wall %e s, max rss %M KB" $H run $D/plan.hecc $D/x.ct --eval-keys $D/keys/eval.keys -o $D/y-$b.ct --quiet --spill-dir $D/spill --spill-budget $b > $D/run-$b-$r.txt 2>&1
cmp $D/y0.ct $D/y-$b.ct && echo "same outputs $b" >> $D/run-$b-$r.txt
done
done
$H decrypt $D/y-128MiB.ct --secret-key $D/keys/secret.key -o $D/logits.npy --request $D/x.ct 2>&1 | grep -v "^predictions" > $D/decrypt.txt
echo done
