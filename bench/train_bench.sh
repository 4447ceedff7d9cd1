#!/usr/bin/env bash
# Training benchmark: mlq-trainer against the same recipe in PyTorch.
#
# Imports Fashion-MNIST with `mlq dataset import-idx`, trains the seed's MLP
# (784-128-64-10, ReLU, cross-entropy, SGD lr 0.01) for one epoch at batch
# sizes 1, 64 and 1024 (batch 1 on the first SUBSET rows), each setting
# REPS times, and prints the median samples/s of each side at its best thread
# setting, their ratio and the peak RSS; then the CNN recipes' ratios
# (bench/cnn_bench.sh, unless --no-cnn). --accuracy adds 10-epoch runs (SGD
# lr 0.01 and Adam lr 0.001, batch 64) validated on t10k. docs/benchmarks.md.
#
# Both sides run the OpenBLAS kernel named by OPENBLAS_CORETYPE, left as the
# environment has it; the thread count is given to each process at start
# (OPENBLAS_NUM_THREADS, read once when the library loads; for mlq also the
# spec's threads, which the trainer splits its layers over, docs/engine.md).
set -euo pipefail

usage() {
    cat <<'EOF'
usage: bench/train_bench.sh [--build DIR] [--reps N] [--subset N] [--accuracy]
                            [--no-torch] [--no-cnn] [--batches "1 64 1024"]

  --build DIR    build tree holding cli/mlq and trainer/mlq-trainer (default:
                 build-bench in the source tree, configured and built if needed)
  --reps N       runs per setting, the median is reported (default 3)
  --subset N     rows used at batch 1 (default 10000)
  --accuracy     also train 10 epochs with SGD and with Adam, validated on t10k
  --no-torch     mlq only
  --no-cnn       skip the CNN recipes (bench/cnn_bench.sh, built in the same tree)
  --batches L    batch sizes to measure (default "1 64 1024")
EOF
}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=""
REPS=3
SUBSET=10000
ACCURACY=0
TORCH=1
CNN=1
BATCHES="1 64 1024"
FMNIST=${FMNIST:-/usr/share/datasets/fashion-mnist}
PY=/usr/bin/python3

while [ $# -gt 0 ]; do
    case "$1" in
    --build) BUILD=$2; shift 2 ;;
    --reps) REPS=$2; shift 2 ;;
    --subset) SUBSET=$2; shift 2 ;;
    --accuracy) ACCURACY=1; shift ;;
    --no-torch) TORCH=0; shift ;;
    --no-cnn) CNN=0; shift ;;
    --batches) BATCHES=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
done

die() { echo "train_bench: $*" >&2; exit 1; }

if [ -z "$BUILD" ]; then
    BUILD=$ROOT/build-bench
    if [ ! -x "$BUILD/cli/mlq" ] || [ ! -x "$BUILD/trainer/mlq-trainer" ]; then
        echo "building mlq in $BUILD ..." >&2
        cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
        cmake --build "$BUILD" -j"$(nproc)" --target mlq mlq-trainer >/dev/null
    fi
fi
MLQ=$BUILD/cli/mlq
TRAINER=$BUILD/trainer/mlq-trainer
[ -x "$MLQ" ] && [ -x "$TRAINER" ] || die "no mlq or mlq-trainer in $BUILD"
[ -r "$FMNIST/train-images-idx3-ubyte.gz" ] ||
    die "Fashion-MNIST not found in $FMNIST (apt-get install dataset-fashion-mnist)"

if [ "$TORCH" = 1 ] && ! "$PY" -c 'import torch, h5py' 2>/dev/null; then
    echo "python3-torch or python3-h5py is missing: torch columns skipped" >&2
    TORCH=0
fi
TIME=""
[ -x /usr/bin/time ] && TIME=/usr/bin/time

TMP=$(mktemp -d /tmp/mlq-bench-XXXXXX)
trap 'rm -rf "$TMP"' EXIT

# ---- data ----
"$MLQ" dataset import-idx "$FMNIST/train-images-idx3-ubyte.gz" \
    "$FMNIST/train-labels-idx1-ubyte.gz" --output "$TMP/train.h5" >/dev/null
"$MLQ" dataset import-idx "$FMNIST/t10k-images-idx3-ubyte.gz" \
    "$FMNIST/t10k-labels-idx1-ubyte.gz" --output "$TMP/test.h5" >/dev/null

# The first SUBSET rows as raw IDX files (header with the new count, then the
# rows), imported the same way.
be32() { printf "$(printf '%08x' "$1" | sed 's/../\\x&/g')"; }
gunzip -c "$FMNIST/train-images-idx3-ubyte.gz" >"$TMP/images.raw"
gunzip -c "$FMNIST/train-labels-idx1-ubyte.gz" >"$TMP/labels.raw"
{
    be32 2051; be32 "$SUBSET"; be32 28; be32 28
    dd if="$TMP/images.raw" bs=1M iflag=skip_bytes,count_bytes skip=16 \
        count=$((SUBSET * 784)) status=none
} >"$TMP/sub-images.idx"
{
    be32 2049; be32 "$SUBSET"
    dd if="$TMP/labels.raw" bs=1M iflag=skip_bytes,count_bytes skip=8 count="$SUBSET" status=none
} >"$TMP/sub-labels.idx"
"$MLQ" dataset import-idx "$TMP/sub-images.idx" "$TMP/sub-labels.idx" \
    --output "$TMP/sub.h5" >/dev/null
rm -f "$TMP"/*.raw "$TMP"/*.idx

# ---- one run of each side ----
# Each prints "SAMPLES_PER_S PEAK_RSS_MB" (the last epoch's speed).

json_field() { # FIELD < lines: the value of FIELD in the last line that has it
    grep -o "\"$1\": *[-0-9.e+]*" | tail -n 1 | sed 's/.*: *//'
}

peak_mb() { # the %M (KiB) that /usr/bin/time wrote to $1
    if [ -s "$1" ]; then awk '{ printf "%.1f", $1 / 1024 }' "$1"; else echo "-"; fi
}

mlq_run() { # DATA BATCH EPOCHS THREADS OPTIMIZER LR [VALIDATION]
    local val=""
    [ -n "${7:-}" ] && val="\"validation\": {\"path\": \"$7\"},"
    cat >"$TMP/spec.json" <<EOF
{"kind": "train", "dataset": {"path": "$1"}, $val
 "model": {"layers": [784, 128, 64, 10], "activation": "relu"},
 "loss": "cross_entropy", "optimizer": {"name": "$5", "lr": $6},
 "batch_size": $2, "epochs": $3, "seed": 42, "threads": $4, "checkpoint_every": 0}
EOF
    : >"$TMP/rss"
    OPENBLAS_NUM_THREADS=$4 ${TIME:+$TIME -f %M -o "$TMP/rss"} \
        "$TRAINER" --standalone "$TMP/spec.json" --log-level warn >"$TMP/out" ||
        die "mlq-trainer failed: $(tail -n 1 "$TMP/out")"
    [ -s "$TMP/kernel" ] || grep -o '"kernel": *"[^"]*"' "$TMP/out" | sed 's/.*"\(.*\)"/\1/' >"$TMP/kernel"
    echo "$(json_field samples_per_s <"$TMP/out") $(peak_mb "$TMP/rss")"
}

torch_run() { # DATA BATCH EPOCHS TORCH_THREADS BLAS_THREADS OPTIMIZER LR [VALIDATION]
    : >"$TMP/rss"
    OPENBLAS_NUM_THREADS=$5 ${TIME:+$TIME -f %M -o "$TMP/rss"} \
        "$PY" "$ROOT/bench/torch_mlp.py" --train "$1" --batch "$2" --epochs "$3" \
        --threads "$4" --optimizer "$6" --lr "$7" ${8:+--val "$8"} >"$TMP/out" ||
        die "torch_mlp.py failed"
    echo "$(json_field samples_per_s <"$TMP/out") $(peak_mb "$TMP/rss")"
}

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# Median over REPS runs of "CMD ARGS..."; prints "SPS RSS" (RSS: the largest).
measure() {
    local sps="" rss=0 r out
    for ((r = 0; r < REPS; r++)); do
        out=$("$@")
        sps+="${out% *}"$'\n'
        rss=$(awk -v a="$rss" -v b="${out#* }" 'BEGIN { print (b == "-" || a + 0 > b + 0) ? a : b }')
    done
    echo "$(printf '%s' "$sps" | median) $rss"
}

# ---- the machine ----
autogroup_note() { # the scheduler setting that makes other sessions' nice useless
    if [ "$(cat /proc/sys/kernel/sched_autogroup_enabled 2>/dev/null)" = 1 ]; then
        echo "note: kernel.sched_autogroup_enabled=1: other sessions' niced work still takes its share" \
            "(as root: echo 0 > /proc/sys/kernel/sched_autogroup_enabled; docs/benchmarks.md)"
    fi
}
autogroup_note
CPU=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
echo "machine: $CPU, $(nproc) CPUs, Linux $(uname -r)"
echo "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-(unset: mlq picks its kernel, torch gets the OpenBLAS default)}"
echo "mlq $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), build $BUILD"
[ "$TORCH" = 1 ] && echo "torch $("$PY" -c 'import torch; print(torch.__version__)')"
echo "load average at start: $(cut -d" " -f1-3 /proc/loadavg) (the benchmark shares the machine with whatever else runs)"
echo "reps: $REPS (median), batch 1 on the first $SUBSET rows, 1 epoch each"
echo "mlq threads (the spec's thread budget) tried: 1 2; torch (set_num_threads:OpenBLAS threads) tried: 1:1 2:2 1:2"
echo

# ---- speed ----
declare -A TARGET=([1]=10 [64]=2 [1024]=1.2)
printf '%-6s %14s %-4s %14s %-5s %7s %11s %10s %10s\n' batch "mlq samples/s" thr \
    "torch samp/s" thr ratio target "mlq MB" "torch MB"
BEST_MLQ_THREADS=1
for B in $BATCHES; do
    DATA=$TMP/train.h5
    [ "$B" = 1 ] && DATA=$TMP/sub.h5
    best=0 bt=1 brss=-
    for t in 1 2; do
        read -r sps rss <<<"$(measure mlq_run "$DATA" "$B" 1 "$t" sgd 0.01)"
        if awk -v a="$sps" -v b="$best" 'BEGIN { exit !(a > b) }'; then
            best=$sps bt=$t brss=$rss
        fi
    done
    [ "$B" = 64 ] && BEST_MLQ_THREADS=$bt
    tbest=- tt=- trss=- ratio=- verdict=""
    if [ "$TORCH" = 1 ]; then
        tbest=0
        for cfg in 1:1 2:2 1:2; do
            read -r sps rss <<<"$(measure torch_run "$DATA" "$B" 1 "${cfg%:*}" "${cfg#*:}" sgd 0.01)"
            if awk -v a="$sps" -v b="$tbest" 'BEGIN { exit !(a > b) }'; then
                tbest=$sps tt=$cfg trss=$rss
            fi
        done
        ratio=$(awk -v a="$best" -v b="$tbest" 'BEGIN { printf "%.2f", a / b }')
        t=${TARGET[$B]:-}
        if [ -n "$t" ]; then
            verdict=$(awk -v r="$ratio" -v t="$t" 'BEGIN { print (r >= t) ? "ok" : "below" }')
            verdict="${t}x $verdict"
        fi
    fi
    printf '%-6s %14.0f %-4s %14s %-5s %7s %11s %10s %10s\n' "$B" "$best" "$bt" "$tbest" "$tt" \
        "$ratio" "${verdict:--}" "$brss" "$trss"
done

echo "OpenBLAS kernel (as mlq-trainer reports it): $(cat "$TMP/kernel" 2>/dev/null)"

# ---- the CNN recipes, beside the MLP's (issue 10) ----
if [ "$CNN" = 1 ]; then
    echo
    echo "CNN recipes at batch 64 (bench/cnn_bench.sh --reps $REPS):"
    [ -x "$BUILD/bench/cnn_bench" ] || cmake --build "$BUILD" --target cnn_bench >/dev/null
    "$ROOT/bench/cnn_bench.sh" --build "$BUILD" --reps "$REPS" $([ "$TORCH" = 1 ] || echo --no-torch)
fi

# ---- accuracy ----
if [ "$ACCURACY" = 1 ]; then
    echo
    echo "accuracy: 10 epochs, batch 64, validated on t10k (mlq threads $BEST_MLQ_THREADS)"
    printf '%-16s %10s %10s\n' recipe mlq torch
    for recipe in "sgd 0.01" "adam 0.001"; do
        set -- $recipe
        mlq_run "$TMP/train.h5" 64 10 "$BEST_MLQ_THREADS" "$1" "$2" "$TMP/test.h5" >/dev/null
        macc=$(json_field val_accuracy <"$TMP/out")
        tacc=-
        if [ "$TORCH" = 1 ]; then
            torch_run "$TMP/train.h5" 64 10 1 1 "$1" "$2" "$TMP/test.h5" >/dev/null
            tacc=$(json_field val_accuracy <"$TMP/out")
        fi
        [ "$tacc" != - ] && tacc=$(printf '%.4f' "$tacc")
        printf '%-16s %10.4f %10s\n' "$1 lr $2" "$macc" "$tacc"
    done
fi
