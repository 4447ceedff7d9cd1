#!/usr/bin/env bash
# CNN training benchmark, mlq against PyTorch side by side (issue 10).
#
# Runs the LeNet and conv+BN recipes (bench/cnn_bench.c, bench/torch_cnn.py)
# at batch 64 with 1 and 2 threads, alternating mlq and PyTorch runs REPS
# times so that both see the same machine, and prints per recipe the median
# samples/s of each side at its best thread setting, their ratio, and the
# peak RSS. mlq's side is cnn_bench --engine: the model API on its thread
# team, the path mlq-trainer takes; for reference, the same kernels driven
# by the bench's own threads, each running the whole network on its share
# of the batch (no hand-over between layers). docs/benchmarks.md.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: bench/cnn_bench.sh [--build DIR] [--reps N] [--steps N] [--no-torch]

  --build DIR  build tree holding bench/cnn_bench (default: build in the
               source tree)
  --reps N     alternating runs per setting; medians are reported (default 3)
  --steps N    training steps per timed run (default 40)
  --no-torch   mlq only
EOF
}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD="$ROOT/build"
REPS=3
STEPS=40
TORCH=1
PY=/usr/bin/python3
while [ $# -gt 0 ]; do
    case "$1" in
    --build) BUILD=$2; shift 2 ;;
    --reps) REPS=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    --no-torch) TORCH=0; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
done
BENCH="$BUILD/bench/cnn_bench"
[ -x "$BENCH" ] || { echo "cnn_bench: no $BENCH (build first)" >&2; exit 1; }
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT

autogroup_note() { # the scheduler setting that makes other sessions' nice useless
    if [ "$(cat /proc/sys/kernel/sched_autogroup_enabled 2>/dev/null)" = 1 ]; then
        echo "note: kernel.sched_autogroup_enabled=1: other sessions' niced work still takes its share" \
            "(as root: echo 0 > /proc/sys/kernel/sched_autogroup_enabled; docs/benchmarks.md)"
    fi
}
autogroup_note
echo "# $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg); $REPS alternating runs of $STEPS steps"
"$BENCH" --kernels --steps 5 --repeat 1 | grep -v '^{' || true
for rep in $(seq "$REPS"); do
    for model in lenet bn; do
        for threads in 1 2; do
            "$BENCH" --model "$model" --engine --threads "$threads" --steps "$STEPS" \
                --repeat 1 >>"$OUT"
            if [ "$TORCH" = 1 ]; then
                "$PY" "$ROOT/bench/torch_cnn.py" --model "$model" --threads "$threads" \
                    --steps "$STEPS" --repeat 1 >>"$OUT"
            fi
            "$BENCH" --model "$model" --threads "$threads" --steps "$STEPS" --repeat 1 >>"$OUT"
        done
    done
done

"$PY" - "$OUT" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
def key(r):
    return (r["side"], r.get("path", ""), r["model"], r["threads"])
groups = {}
for r in rows:
    groups.setdefault(key(r), []).append(r)
med = {k: (statistics.median(x["samples_per_s"] for x in v),
           max(x["peak_rss_mb"] for x in v)) for k, v in groups.items()}
for k in sorted(med):
    print("%-6s %-8s %-6s threads %d: %7.0f samples/s (median of %d), peak RSS %.0f MB"
          % (k[0], k[1] or "-", k[2], k[3], med[k][0], len(groups[k]), med[k][1]))
for model in ("lenet", "bn"):
    best = lambda side, path: max((med[k][0], k[3]) for k in med
                                  if k[0] == side and k[1] == path and k[2] == model)
    m = best("mlq", "engine")
    line = "%-6s mlq %.0f samples/s (%d threads)" % (model, m[0], m[1])
    if any(k[0] == "torch" and k[2] == model for k in med):
        t = best("torch", "")
        line += ", torch %.0f (%d threads): ratio %.2f" % (t[0], t[1], m[0] / t[0])
    e = best("mlq", "kernels")
    line += "; the kernels on the bench's own threads %.0f (%d)" % (e[0], e[1])
    print(line)
EOF
