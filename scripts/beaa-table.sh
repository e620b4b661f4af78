#!/usr/bin/env bash
# Regenerates the BEAA accuracy table: for each network (LeNet-style `lenet5`, HEMET-style
# SqueezeNet `squeezenet28`), data set (MNIST, Fashion-MNIST) and seed it trains
#   - the ReLU network (`--relu`), the teacher of the KD rows,
#   - channel- and element-wise students distilled from it (`--teacher`),
#   - layer-, channel- and element-wise students without KD,
# each on the full training set less a validation split (early stopping; the best validation
# epoch's weights are kept), with its per-epoch history (`--history`). Then
# `scripts/beaa_report.py` writes OUT_DIR/table.md (mean and standard deviation over the seeds
# of the full-test-set accuracy, the reference evaluator on the exported weights) and, with
# FIGURES=DIR, the training curves and coefficient heat maps as SVG.
# A killed run resumes where it stopped: finished trainings (their log ends with the reload
# check) are kept, an unfinished one starts again. Then (ENCRYPTED=1) the element-wise KD
# LeNet-style model of each data set (seed 0) runs encrypted (batch layout; the client/server
# commands) on the 256 bundled test images of `models/data/`, and a second table gives the
# accuracy on that batch, the argmax agreement with the plaintext model (reference evaluator,
# `predict` example of hecc-train), and the total and amortized time.
# Logs, weights, histories and specs stay under OUT_DIR/<net>-<data>/seed<S>/.
#
# Usage: scripts/beaa-table.sh DATA_DIR OUT_DIR
#   DATA_DIR holds mnist/ and fashion-mnist/ (as made by `scripts/fetch-datasets.sh data`).
# Environment (defaults in brackets):
#   HECC      hecc binary (the default build has `hecc train`) [target/release/hecc]
#   NETS      networks [lenet5 squeezenet28] (empty: no training)     DATASETS  data sets [mnist fashion-mnist]
#   SEEDS     [0 1 2]
#   EPOCHS_<net>  most epochs (teacher and students)  [lenet5: 15, squeezenet28: 15]
#   LIMIT_<net>   training images used (first N; empty = all 60,000) [all]
#   LR_<net>      initial learning rate of the quadratic students [0.02]
#   LR_TEACHER_<net>  initial learning rate of the ReLU teacher [0.05]
#   VALIDATION [5000]  training images held out for validation (the last ones)
#   PATIENCE   [5]     epochs without a better validation accuracy before stopping
#   THREADS    [2]     RAYON_NUM_THREADS of every training (they run one after another, nice 19)
#   STUDENT_ARGS       extra `hecc train` arguments of the quadratic rows (e.g. "--coeff-l2 0")
#   FIGURES    directory for the SVG figures [none]
#   TABLE_ONLY=1  only rebuild table.md (and the figures) from existing histories
#   ENCRYPTED [1]      0 skips the encrypted runs; INFER_THREADS threads of the runtime [1]
#   SCALE_BITS [33]    CKKS scale bits of the encrypted run: 33 gives N=2^14 at 128-bit security
#                      (the default 40 of `hecc compile` needs N=2^15); [40] with TEST_PARAMS=1
#   TEST_PARAMS [0]    1: compile the encrypted run at INSECURE test parameters (the same modulus
#                      chain on the smallest ring that holds the batch, N=2^12, no security
#                      check) with the compile_test_params example (COMPILE_TEST, built by
#                      `cargo build --release --example compile_test_params`)
#   MEM_LIMIT_GB [12]  memory budget of the encrypted run (compile --memory-budget, and a kill
#                      switch on the resident memory of every step)
#   PREDICT   [target/release/examples/predict]  built by
#             `cargo build --release -p hecc-train --example predict`
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 DATA_DIR OUT_DIR" >&2
    exit 2
fi
DATA=$1
OUT=$2
HECC=${HECC:-target/release/hecc}
NETS=${NETS-lenet5 squeezenet28}
DATASETS=${DATASETS:-mnist fashion-mnist}
SEEDS=${SEEDS:-0 1 2}
EPOCHS_lenet5=${EPOCHS_lenet5:-15}
EPOCHS_squeezenet28=${EPOCHS_squeezenet28:-15}
LIMIT_lenet5=${LIMIT_lenet5-}
LIMIT_squeezenet28=${LIMIT_squeezenet28-}
LR_lenet5=${LR_lenet5:-0.02}
LR_squeezenet28=${LR_squeezenet28:-0.02}
LR_TEACHER_lenet5=${LR_TEACHER_lenet5:-0.05}
LR_TEACHER_squeezenet28=${LR_TEACHER_squeezenet28:-0.05}
VALIDATION=${VALIDATION:-5000}
PATIENCE=${PATIENCE:-5}
THREADS=${THREADS:-2}
STUDENT_ARGS=${STUDENT_ARGS:-}
MODELS=$(dirname "$0")/../models
mkdir -p "$OUT"

# run NAME ARGS...: one `hecc train` run into $dir/NAME.{safetensors,yaml,log,history.json}.
run() {
    local name=$1
    shift
    if [ -f "$dir/$name.log" ] && grep -q "reloaded through" "$dir/$name.log" \
        && [ -f "$dir/$name.history.json" ]; then
        echo "  $name: done before, kept"
        return 0
    fi
    echo "  $name: $(date -u +%H:%M:%S) start"
    if RAYON_NUM_THREADS=$THREADS nice -n 19 "$HECC" train "$MODELS/$net.yaml" --data "$DATA/$ds" \
        --epochs "$epochs" --lr "$lr" --seed "$seed" ${limit:+--limit "$limit"} \
        --validation "$VALIDATION" --patience "$PATIENCE" --history "$dir/$name.history.json" \
        --quiet -o "$dir/$name.safetensors" "$@" >"$dir/$name.log" 2>&1; then
        echo "  $name: $(date -u +%H:%M:%S) $(grep 'reloaded through' "$dir/$name.log" | tail -1 | sed 's/.*accuracy //')"
    else
        echo "  $name: FAILED (see $dir/$name.log)"
    fi
}

if [ "${TABLE_ONLY:-0}" != 1 ]; then
    for seed in $SEEDS; do
        for net in $NETS; do
            for ds in $DATASETS; do
                dir=$OUT/$net-$ds/seed$seed
                mkdir -p "$dir"
                ev=EPOCHS_$net lv=LIMIT_$net rv=LR_$net tv=LR_TEACHER_$net
                epochs=${!ev} limit=${!lv} lr=${!rv} tlr=${!tv}
                echo "$net on $ds, seed $seed: up to $epochs epochs, ${limit:-all} training images, lr $lr (teacher $tlr)"
                lr=$tlr run relu --relu
                # shellcheck disable=SC2086  # STUDENT_ARGS is a list of arguments
                run channel-kd --granularity channel --teacher "$dir/relu.safetensors" $STUDENT_ARGS
                run element-kd --granularity element --teacher "$dir/relu.safetensors" $STUDENT_ARGS
                run layer --granularity layer $STUDENT_ARGS
                run channel --granularity channel $STUDENT_ARGS
                run element --granularity element $STUDENT_ARGS
            done
        done
    done
fi

# ---- the encrypted runs ----------------------------------------------------------------------
# guarded LOG CMD...: runs CMD (stdout and stderr to LOG) and kills it if its resident memory
# passes MEM_LIMIT_GB (the machine is shared and has no swap); prints its wall seconds.
guarded() {
    local log=$1
    shift
    local t0 t1 pid rss status=0
    t0=$(date +%s.%N)
    "$@" >"$log" 2>&1 &
    pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
        if [ "${rss:-0}" -gt $((MEM_LIMIT_GB * 1024 * 1024)) ]; then
            kill "$pid"
            echo "killed: resident memory passed $MEM_LIMIT_GB GB" >>"$log"
        fi
        sleep 1
    done
    wait "$pid" || status=$?
    t1=$(date +%s.%N)
    echo "$t0 $t1" | awk '{printf "%.2f\n", $2 - $1}'
    return $status
}

# encrypted DS: the element-wise KD LeNet-style model of DS, encrypted, on the bundled images,
# through the client/server commands (compile, keygen, encrypt, run, decrypt), then the
# plaintext predictions of the same model (reference evaluator) for the agreement.
encrypted() {
    local ds=$1 dir=$OUT/lenet5-$1/seed0 enc=$OUT/lenet5-$1/encrypted
    local images=$MODELS/data/$ds-t10k-first256-images-idx3-ubyte
    local labels=$MODELS/data/$ds-t10k-first256-labels-idx1-ubyte
    local nice=(env RAYON_NUM_THREADS="${INFER_THREADS:-1}" nice -n 19)
    mkdir -p "$enc"
    : >"$enc/times"
    local step secs
    for step in compile keygen encrypt run decrypt; do
        case $step in
            compile) cmd=(compile "$dir/element-kd.yaml" --layout batch --batch 256
                --scale-bits "$SCALE_BITS" --memory-budget $((MEM_LIMIT_GB * 1024 * 1024 * 1024)) -o "$enc/plan.json")
                if [ "$TEST_PARAMS" = 1 ]; then
                    # Insecure test parameters: the smallest ring that holds the batch.
                    if ! secs=$(guarded "$enc/compile.log" "${nice[@]}" "$COMPILE_TEST" \
                        "$dir/element-kd.yaml" "$enc/plan.json" 256 "$SCALE_BITS"); then
                        echo "  compile FAILED (see $enc/compile.log)"
                        return 1
                    fi
                    echo "compile $secs" >>"$enc/times"
                    echo "  compile (test parameters): $secs s"
                    continue
                fi ;;
            keygen) cmd=(keygen "$enc/plan.json" -o "$enc/keys") ;;
            encrypt) cmd=(encrypt "$enc/plan.json" --keys "$enc/keys" --input "$images"
                -o "$enc/inputs.ct") ;;
            run) cmd=(run "$enc/plan.json" "$enc/inputs.ct" --eval-keys "$enc/keys/eval.keys"
                --quiet -o "$enc/outputs.ct") ;;
            decrypt) cmd=(decrypt "$enc/outputs.ct" --secret-key "$enc/keys/secret.key"
                -o "$enc/logits.npy") ;;
        esac
        if ! secs=$(guarded "$enc/$step.log" "${nice[@]}" "$HECC" "${cmd[@]}"); then
            echo "  $step FAILED (see $enc/$step.log)"
            return 1
        fi
        echo "$step $secs" >>"$enc/times"
        echo "  $step: $secs s"
    done
    rm -f "$enc/inputs.ct" "$enc/outputs.ct"
    "$PREDICT" "$dir/element-kd.yaml" "$images" "$labels" >"$enc/plain.log"
    # Encrypted and plaintext predictions, and the labels (from the IDX file, 8-byte header).
    local he pl lab
    he=$(grep '^predictions' "$enc/decrypt.log" | sed 's/^[^:]*: //')
    pl=$(grep '^predictions' "$enc/plain.log" | sed 's/^[^:]*: //')
    lab=$(od -An -v -tu1 -j8 "$labels" | tr -s ' \n' ' ')
    awk -v he="$he" -v pl="$pl" -v lab="$lab" 'BEGIN {
        n = split(he, h, " "); split(pl, p, " "); split(lab, l, " ");
        for (i = 1; i <= n; i++) { c += (h[i] == l[i]); a += (h[i] == p[i]); q += (p[i] == l[i]) }
        printf "images %d\nencrypted correct %d\nplaintext correct %d\nagreement %d\n", n, c, q, a
    }' >"$enc/summary"
    awk '{ s += $2 } END { printf "total seconds %.2f\n", s }' "$enc/times" >>"$enc/summary"
    cat "$enc/summary"
}

MEM_LIMIT_GB=${MEM_LIMIT_GB:-12}
TEST_PARAMS=${TEST_PARAMS:-0}
if [ "$TEST_PARAMS" = 1 ]; then SCALE_BITS=${SCALE_BITS:-40}; else SCALE_BITS=${SCALE_BITS:-33}; fi
COMPILE_TEST=${COMPILE_TEST:-target/release/examples/compile_test_params}
PREDICT=${PREDICT:-target/release/examples/predict}
if [ "${ENCRYPTED:-1}" = 1 ]; then
    for ds in $DATASETS; do
        [ -f "$OUT/lenet5-$ds/seed0/element-kd.yaml" ] || continue
        [ -f "$OUT/lenet5-$ds/encrypted/summary" ] && continue
        echo "encrypted run: lenet5 element-wise + KD on $ds: $(date -u +%H:%M:%S) start"
        encrypted "$ds" || true
    done
fi

# ---- the table ------------------------------------------------------------------------------
# Mean and spread over the seeds, the ordering check and (FIGURES) the figures.
report_args=(--nets ${NETS:-lenet5 squeezenet28} --datasets $DATASETS)
[ -n "${FIGURES:-}" ] && report_args+=(--figures "$FIGURES")
python3 "$(dirname "$0")/beaa_report.py" "$OUT" "${report_args[@]}" >/dev/null
{
    cat "$OUT/table.md"
    have=0
    for ds in $DATASETS; do [ -f "$OUT/lenet5-$ds/encrypted/summary" ] && have=1; done
    if [ $have = 1 ]; then
        echo
        echo "Encrypted run of the element-wise + KD LeNet-style model on the first 256 test images"
        if cat "$OUT"/lenet5-*/encrypted/compile.log 2>/dev/null | grep -q insecure; then
            echo "(INSECURE TEST PARAMETERS: \`compile_test_params\` example, batch layout, batch 256,"
            echo "then \`hecc keygen\`, encrypt, run, decrypt; one thread,"
        else
            echo "(\`hecc compile --layout batch --batch 256\`, keygen, encrypt, run, decrypt; one thread,"
        fi
        echo "nice 19). Total = the five commands' wall time; amortized = total / 256; agreement ="
        echo "encrypted argmax equal to the reference evaluator's argmax on the same images."
        echo
        echo "| data | parameters | encrypted accuracy | plaintext accuracy | agreement | run (server, wall) | total (wall) | amortized per image | peak memory (run) |"
        echo "|---|---|---|---|---|---|---|---|---|"
        for ds in $DATASETS; do
            enc=$OUT/lenet5-$ds/encrypted
            [ -f "$enc/summary" ] || continue
            params=$(grep '^params' "$enc/compile.log" | head -1 | sed 's/^params //; s/  [0-9]* special primes.*security/  security/; s/   */, /g')
            n=$(awk '/^images/ {print $2}' "$enc/summary")
            c=$(awk '/^encrypted correct/ {print $3}' "$enc/summary")
            q=$(awk '/^plaintext correct/ {print $3}' "$enc/summary")
            a=$(awk '/^agreement/ {print $2}' "$enc/summary")
            tot=$(awk '/^total seconds/ {print $3}' "$enc/summary")
            run=$(awk '$1 == "run" {print $2}' "$enc/times")
            peak=$(grep -o 'peak memory [0-9.]* [KMG]iB' "$enc/run.log" | head -1 | sed 's/peak memory //')
            amort=$(awk -v t="$tot" -v n="$n" 'BEGIN { printf "%.2f", t / n }')
            # CPU seconds of the run: the `cpu` column of the per-stage report.
            cpu=$(awk '/^stage/ {on = 1; next} /^run:/ {on = 0} on && NF >= 8 {
                v = $(NF - 5); sub(/s$/, "", v); c += v } END { printf "%.1f", c }' "$enc/run.log")
            echo "| $ds | $params | $c/$n | $q/$n | $a/$n | $run s ($cpu CPU-s) | $tot s | $amort s | ${peak:-?} |"
        done
    fi
} >"$OUT/table-all.md"
cat "$OUT/table-all.md"
