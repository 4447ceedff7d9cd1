#!/usr/bin/env bash
# Sequence-model training benchmark, mlq against PyTorch side by side
# (issue 15): the row-by-row LSTM (batch 64) and the 4-layer, 4-head,
# 128-wide character Transformer at context 128 (batch 32), bench/seq_bench.c
# and bench/torch_seq.py, at 1 and 2 threads, alternating mlq and PyTorch
# runs REPS times so that both see the same machine. Prints per recipe and
# thread count the medians of samples/s and of samples per CPU second (what
# a shared machine's neighbours change least), then the median samples/s of
# each side at its best thread setting and their ratio.
# docs/benchmarks.md.
set -euo pipefail

usage() {
    cat <<'EOT'
usage: bench/seq_bench.sh [--build DIR] [--reps N] [--steps N] [--models "lstm gpt"]
                          [--threads "1 2"] [--no-torch]
EOT
}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD="$ROOT/build"
REPS=3
STEPS=10
MODELS="lstm gpt"
THREADS="1 2"
TORCH=1
PY=/usr/bin/python3
while [ $# -gt 0 ]; do
    case "$1" in
    --build) BUILD=$2; shift 2 ;;
    --reps) REPS=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    --models) MODELS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --no-torch) TORCH=0; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
done
BENCH="$BUILD/bench/seq_bench"
[ -x "$BENCH" ] || { echo "seq_bench.sh: no $BENCH; build the tree first" >&2; exit 1; }
if [ $TORCH = 1 ] && ! $PY -c "import torch" 2>/dev/null; then
    echo "seq_bench.sh: no PyTorch for $PY; running mlq only" >&2
    TORCH=0
fi
echo "host: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)," \
     "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-(unset: mlq picks its kernel)}"
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
for m in $MODELS; do
    best_mlq=0 best_torch=0
    for t in $THREADS; do
        : >/tmp/seq_bench.$$.mlq
        : >/tmp/seq_bench.$$.torch
        for _ in $(seq "$REPS"); do
            "$BENCH" --model "$m" --threads "$t" --steps "$STEPS" --repeat 1 |
                sed 's/.*median \([0-9.]*\).*per_cpu_s \([0-9.]*\).*/\1 \2/' >>/tmp/seq_bench.$$.mlq
            if [ $TORCH = 1 ]; then
                $PY "$ROOT/bench/torch_seq.py" --model "$m" --threads "$t" --steps "$STEPS" \
                    --repeat 1 | sed 's/.*median \([0-9.]*\).*per_cpu_s \([0-9.]*\).*/\1 \2/' \
                    >>/tmp/seq_bench.$$.torch
            fi
        done
        a=$(cut -d' ' -f1 </tmp/seq_bench.$$.mlq | median)
        ac=$(cut -d' ' -f2 </tmp/seq_bench.$$.mlq | median)
        b=$([ $TORCH = 1 ] && cut -d' ' -f1 </tmp/seq_bench.$$.torch | median || echo 0)
        bc=$([ $TORCH = 1 ] && cut -d' ' -f2 </tmp/seq_bench.$$.torch | median || echo 0)
        echo "$m threads $t: mlq $a samples/s ($ac per CPU second)," \
             "torch $b samples/s ($bc per CPU second)"
        best_mlq=$(awk -v x="$a" -v y="$best_mlq" 'BEGIN { print (x > y) ? x : y }')
        best_torch=$(awk -v x="$b" -v y="$best_torch" 'BEGIN { print (x > y) ? x : y }')
    done
    if [ $TORCH = 1 ]; then
        echo "$m best: mlq $best_mlq, torch $best_torch samples/s, ratio" \
             "$(awk -v x="$best_mlq" -v y="$best_torch" 'BEGIN { printf "%.2f", x / y }')x"
    fi
done
rm -f /tmp/seq_bench.$$.mlq /tmp/seq_bench.$$.torch
