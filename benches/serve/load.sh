#!/usr/bin/env bash
# Load test of `hecc serve` on loopback: CryptoNets at 128-bit in the batch layout (8192 images
# per job), one key set and one session per client, and for 1, 2 and 4 concurrent clients the
# jobs per minute, latency percentiles (submit to result downloaded) and the server's resident
# memory sampled during each round. Bounded: JOBS jobs per client and MAX_SECONDS per round.
#
# Usage: benches/serve/load.sh [WORKDIR]
# Environment: CLIENTS [1,2,4], JOBS [3], MAX_SECONDS [600], CONCURRENCY [1] (jobs the server
#   runs at once), PYTHON [/usr/bin/python3, with numpy], IMAGES [data/mnist/t10k-images-idx3-ubyte, else the 256 bundled images].
set -euo pipefail
cd "$(dirname "$0")/../.."
W=${1:-serve-load}
CLIENTS=${CLIENTS:-1,2,4}
JOBS=${JOBS:-3}
MAX_SECONDS=${MAX_SECONDS:-600}
CONCURRENCY=${CONCURRENCY:-1}
IMAGES=${IMAGES:-data/mnist/t10k-images-idx3-ubyte}
[ -f "$IMAGES" ] || IMAGES=models/data/mnist-t10k-first256-images-idx3-ubyte
mkdir -p "$W"
cargo build --release --locked --example serve_load >&2
H=target/release/hecc
most=$(tr ',' '\n' <<<"$CLIENTS" | sort -n | tail -1)

"$H" compile models/cryptonets.yaml --layout batch --batch 8192 -o "$W/plan.json" > "$W/compile.txt"
sessions=() inputs=()
for i in $(seq 1 "$most"); do
    [ -f "$W/keys$i/eval.keys" ] || "$H" keygen "$W/plan.json" -o "$W/keys$i" --force >&2
    [ -f "$W/x$i.ct" ] || "$H" encrypt "$W/plan.json" --keys "$W/keys$i" --input "$IMAGES" \
        --limit 8192 -o "$W/x$i.ct" >&2
    inputs+=("$W/x$i.ct")
done

rm -rf "$W/state"
"$H" serve cryptonets="$W/plan.json" --listen 127.0.0.1:0 --state "$W/state" \
    --concurrency "$CONCURRENCY" > "$W/serve.out" 2> "$W/serve.err" &
server=$!
trap 'kill -TERM $server 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do
    grep -q "listening on" "$W/serve.out" 2>/dev/null && break
    sleep 0.1
done
URL=$(grep -o 'http://[0-9.:]*' "$W/serve.out")
for i in $(seq 1 "$most"); do
    "$H" client open --server "$URL" --plan cryptonets --eval-keys "$W/keys$i/eval.keys" \
        -o "$W/s$i.json" --quiet > /dev/null
    sessions+=("$W/s$i.json")
done
echo "hecc serve load test: CryptoNets, batch layout, 8192 images per job, $(nproc) cores," \
    "server concurrency $CONCURRENCY, $(date -u +%FT%TZ)"
join() { local IFS=,; echo "$*"; }
target/release/examples/serve_load --server "$URL" --sessions "$(join "${sessions[@]}")" \
    --inputs "$(join "${inputs[@]}")" --clients "$CLIENTS" --jobs "$JOBS" --max-seconds "$MAX_SECONDS"
# One more served result, decrypted and checked against its request by the client.
"$H" client run "$W/s1.json" "$W/x1.ct" -o "$W/y1.ct" --quiet > /dev/null
"$H" decrypt "$W/y1.ct" --secret-key "$W/keys1/secret.key" --request "$W/x1.ct" -o "$W/y1.npy" > /dev/null
LABELS=${IMAGES/images-idx3/labels-idx1}
if [ -f "$LABELS" ]; then
    "${PYTHON:-/usr/bin/python3}" - "$W/y1.npy" "$LABELS" <<'PY'
import sys
import numpy as np
logits = np.load(sys.argv[1])
raw = open(sys.argv[2], "rb").read()
labels = np.frombuffer(raw, dtype=np.uint8, offset=8)[: len(logits)]
print(f"served result decrypted by the client: {len(logits)} images, "
      f"accuracy {100 * (logits.argmax(1) == labels).mean():.2f} %")
PY
fi
kill -TERM $server; wait $server || true
trap - EXIT
