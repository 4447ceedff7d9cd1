#!/usr/bin/env bash
# Sweep benchmark (issue 12, docs/benchmarks.md "Sweeps"):
#
# 1. ASHA against the full search: TRIALS random trials of the seed MLP on
#    Fashion-MNIST (learning rate log-uniform, optimizer, batch size, width:
#    examples/sweeps/seed-mlp-asha.json) with ASHA (max_t MAX_T epochs,
#    reduction factor 4, grace period 1, metric val_accuracy on t10k), then
#    the same TRIALS configurations (the same seed) with no scheduler. Prints
#    the epochs each trained and the best val_accuracy of each.
#    Then Optuna's pruner over the same configurations, trained by the same
#    broker and trainers (bench/optuna_peer.py; --peer none skips it), and a
#    replay of the stopping rules over the full search's recorded curves in
#    many trial orders (bench/sweep_replay.py).
# 2. Busy trainers: a sweep on `mlq up --trainers 2`; prints the longest time
#    a trainer sat idle between two trials while trials waited, against the
#    heartbeat interval.
#
# Everything runs niced (nice -n 19) on a local broker with its own database
# in a temporary directory; --trainers sets how many trainers part 1 uses.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: bench/sweep_bench.sh [--build DIR] [--trials N] [--max-t N] [--subset N]
                            [--trainers N] [--seed N] [--peer sha|median|none]
                            [--no-asha] [--no-busy] [--keep]

  --build DIR    build tree with cli/mlq, broker/mlq-broker, trainer/mlq-trainer
                 (default: build-bench, configured and built if needed)
  --trials N     random trials (default 64)
  --max-t N      epochs of a full trial (default 16)
  --subset N     training rows, the first N of the 60,000 (default all); validation is
                 always the 10,000 of t10k
  --trainers N   trainers for part 1 (default 1)
  --seed N       the sweeps' seed (default 1)
  --peer P       Optuna's pruner over the same trials: sha (SuccessiveHalvingPruner,
                 default), median (MedianPruner) or none; needs python3-optuna
  --no-asha      skip part 1; --no-busy skip part 2; --keep keep the temporary directory
EOF
}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=""
TRIALS=64
MAXT=16
SUBSET=60000
NTRAINERS=1
SEED=1
PEER=sha
ASHA=1
BUSY=1
KEEP=0
FMNIST=${FMNIST:-/usr/share/datasets/fashion-mnist}
while [ $# -gt 0 ]; do
    case "$1" in
    --build) BUILD=$2; shift 2 ;;
    --trials) TRIALS=$2; shift 2 ;;
    --max-t) MAXT=$2; shift 2 ;;
    --subset) SUBSET=$2; shift 2 ;;
    --trainers) NTRAINERS=$2; shift 2 ;;
    --seed) SEED=$2; shift 2 ;;
    --peer) PEER=$2; shift 2 ;;
    --no-asha) ASHA=0; shift ;;
    --no-busy) BUSY=0; shift ;;
    --keep) KEEP=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
done
die() { echo "sweep_bench: $*" >&2; exit 1; }

if [ -z "$BUILD" ]; then
    BUILD=$ROOT/build-bench
    if [ ! -x "$BUILD/cli/mlq" ] || [ ! -x "$BUILD/broker/mlq-broker" ]; then
        echo "building mlq in $BUILD ..." >&2
        cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
        nice -n 19 cmake --build "$BUILD" -j1 --target mlq mlq-broker mlq-trainer >/dev/null
    fi
fi
MLQ=$BUILD/cli/mlq
command -v sqlite3 >/dev/null || die "needs the sqlite3 command (apt-get install sqlite3)"
/usr/bin/python3 -c 'import numpy' 2>/dev/null || die "needs numpy (apt-get install python3-numpy)"
if [ "$PEER" != none ] && ! /usr/bin/python3 -c 'import optuna' 2>/dev/null; then
    die "the Optuna peer needs python3-optuna (apt-get install python3-optuna), or --peer none"
fi
[ -r "$FMNIST/train-images-idx3-ubyte.gz" ] || die "no Fashion-MNIST in $FMNIST"

TMP=$(mktemp -d /tmp/mlq-sweep-bench-XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ "$KEEP" = 1 ] && echo "kept $TMP" >&2 || rm -rf "$TMP"
}
trap cleanup EXIT
export MLQ_CONFIG=$TMP/empty.conf XDG_CONFIG_HOME=$TMP
: >"$MLQ_CONFIG"

# The first SUBSET training rows as an IDX pair, then HDF5.
python3 - "$FMNIST" "$SUBSET" "$TMP" <<'EOF'
import gzip, struct, sys
src, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
for name, item, hdr in (("train-images-idx3-ubyte.gz", 784, 16), ("train-labels-idx1-ubyte.gz", 1, 8)):
    data = gzip.open(f"{src}/{name}").read()
    with open(f"{out}/{name[:-3]}", "wb") as g:
        g.write(data[:4] + struct.pack(">I", n) + data[8:hdr] + data[hdr:hdr + n * item])
EOF
nice -n 19 "$MLQ" dataset import-idx "$TMP/train-images-idx3-ubyte" "$TMP/train-labels-idx1-ubyte" \
    --output "$TMP/train.h5" >/dev/null
nice -n 19 "$MLQ" dataset import-idx "$FMNIST/t10k-images-idx3-ubyte.gz" \
    "$FMNIST/t10k-labels-idx1-ubyte.gz" --output "$TMP/test.h5" >/dev/null

# The example sweep with this run's files and settings.
python3 - "$ROOT/examples/sweeps/seed-mlp-asha.json" "$TMP" "$MAXT" <<'EOF'
import json, sys
doc = json.load(open(sys.argv[1]))
doc["dataset"]["path"] = sys.argv[2] + "/train.h5"
doc["validation"]["path"] = sys.argv[2] + "/test.h5"
doc["epochs"] = int(sys.argv[3])
doc["threads"] = 1
doc["checkpoint_every"] = 0
json.dump(doc, open(sys.argv[2] + "/sweep.json", "w"))
EOF

start_stack() { # DB ENDPOINT NTRAINERS
    nice -n 19 "$BUILD/broker/mlq-broker" --db "$1" --bind "$2" >"$1.broker.log" 2>&1 &
    PIDS+=($!)
    for i in $(seq 1 "$3"); do
        nice -n 19 "$BUILD/trainer/mlq-trainer" --broker "$2" --name "t$i" --threads 1 \
            >"$1.t$i.log" 2>&1 &
        PIDS+=($!)
    done
    for _ in $(seq 50); do MLQ_BROKER=$2 "$MLQ" queue >/dev/null 2>&1 && return; sleep 0.1; done
    die "the broker at $2 did not answer"
}
stop_stack() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    PIDS=()
}
q() { sqlite3 -readonly "$DB" "$1"; }

if [ "$ASHA" = 1 ]; then
    DB=$TMP/asha.db
    EP=ipc://$TMP/asha.sock
    start_stack "$DB" "$EP" "$NTRAINERS"
    export MLQ_BROKER=$EP MLQ_DB=$DB
    for sched in asha none; do
        t0=$(date +%s.%N)
        id=$(nice -n 19 "$MLQ" sweep "$TMP/sweep.json" --trials "$TRIALS" --max-t "$MAXT" \
            --seed "$SEED" --scheduler $sched --name "$sched" 2>/dev/null)
        nice -n 19 "$MLQ" sweep wait "$id" >/dev/null
        t1=$(date +%s.%N)
        eval "ID_$sched=$id"
        eval "SECS_$sched=$(echo "$t1 - $t0" | bc)"
    done
    PEER_OUT=""
    if [ "$PEER" != none ]; then
        PEER_OUT=$(nice -n 19 /usr/bin/python3 "$ROOT/bench/optuna_peer.py" --mlq "$MLQ" --db "$DB" \
            --sweep "$ID_none" --pruner "$PEER" --n-jobs "$NTRAINERS" --tmp "$TMP")
    fi
    stop_stack
    epochs() { q "SELECT sum(e) FROM (SELECT max(m.epoch) AS e FROM jobs j JOIN metrics m ON
                  m.run = j.id AND m.key = 'train_loss' WHERE j.sweep = $1 GROUP BY j.id)"; }
    best() { q "SELECT printf('%.4f', max(m.value)) FROM jobs j JOIN metrics m ON m.run = j.id
                AND m.key = 'val_accuracy' WHERE j.sweep = $1"; }
    best_trial() { q "SELECT t.trial || ' ' || t.params FROM sweep_trials t JOIN metrics m ON
                      m.run = t.job AND m.key = 'val_accuracy' WHERE t.sweep = $1
                      ORDER BY m.value DESC LIMIT 1"; }
    same=$(q "SELECT count(*) FROM sweep_trials a JOIN sweep_trials b ON a.trial = b.trial AND
              a.params = b.params WHERE a.sweep = $ID_asha AND b.sweep = $ID_none")
    ea=$(epochs "$ID_asha"); en=$(epochs "$ID_none")
    ba=$(best "$ID_asha"); bn=$(best "$ID_none")
    echo "== ASHA against the full search: $TRIALS trials of the seed MLP, max_t $MAXT, $SUBSET" \
        "training rows, validation t10k, $NTRAINERS trainer(s), seed $SEED"
    echo "configurations in common: $same of $TRIALS"
    printf '%-12s %8s %10s %14s %10s\n' sweep epochs "of full" best_val_acc seconds
    printf '%-12s %8d %9.1f%% %14s %10.0f\n' asha "$ea" "$(echo "100 * $ea / $en" | bc -l)" "$ba" "$SECS_asha"
    printf '%-12s %8d %9.1f%% %14s %10.0f\n' full "$en" 100 "$bn" "$SECS_none"
    echo "ASHA's best trial: $(best_trial "$ID_asha")"
    echo "full search's best trial: $(best_trial "$ID_none")"
    echo "ASHA's rungs (rung, epoch, decision, trials):"
    q "SELECT rung, epoch, decision, count(*) FROM sweep_decisions WHERE sweep = $ID_asha
       GROUP BY rung, decision ORDER BY rung, decision" | sed 's/^/  /'
    awk -v ea="$ea" -v en="$en" -v ba="$ba" -v bn="$bn" 'BEGIN {
        printf "epochs: %d <= %d/5 = %.1f: %s\n", ea, en, en / 5, ea <= en / 5 ? "yes" : "NO";
        d = (bn - ba) * 100;
        printf "best val_accuracy: %.2f points below the full search'"'"'s (within 0.3: %s)\n", d,
               d <= 0.3 ? "yes" : "NO" }'
    if [ -n "$PEER_OUT" ]; then
        echo "== the peer: Optuna over the same $TRIALS configurations, the same broker and trainers"
        echo "$PEER_OUT"
        /usr/bin/python3 - "$PEER_OUT" "$en" "$bn" <<'EOF'
import json, sys
r, en, bn = json.loads(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
d = (bn - r["best"]) * 100
print(f"optuna {r['pruner']}: {r['epochs']} epochs ({100 * r['epochs'] / en:.1f}% of the full search, "
      f"<= 1/5: {'yes' if r['epochs'] <= en / 5 else 'NO'}), {r['pruned']} of {r['trials']} pruned, "
      f"best val_accuracy {r['best']:.4f}, {d:.2f} points below the full search's "
      f"(within 0.3: {'yes' if d <= 0.3 else 'NO'}), {r['seconds']:.0f} s")
EOF
    fi
    echo "== the rules replayed over the full search's curves (bench/sweep_replay.py)"
    /usr/bin/python3 "$ROOT/bench/sweep_replay.py" --db "$DB" --full "$ID_none" --asha "$ID_asha" \
        --trainers "$NTRAINERS" --orders 1000
fi

if [ "$BUSY" = 1 ]; then
    # Part 2: mlq up --trainers 2, a sweep of short trials, then each trainer's
    # gaps between the end of one trial and the start of its next while trials
    # were still queued.
    DB=$TMP/busy.db
    EP=ipc://$TMP/busy.sock
    export MLQ_BROKER=$EP MLQ_DB=$DB
    nice -n 19 "$MLQ" up --trainers 2 --db "$DB" --bind "$EP" >"$TMP/up.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do
        n=$("$MLQ" workers --json 2>/dev/null | python3 -c \
            'import json,sys; print(len(json.load(sys.stdin)["trainers"]))' 2>/dev/null || echo 0)
        [ "$n" = 2 ] && break
        sleep 0.1
    done
    id=$(nice -n 19 "$MLQ" sweep "$TMP/sweep.json" --trials 16 --max-t 2 --seed "$SEED" \
        --scheduler none --name busy 2>/dev/null)
    nice -n 19 "$MLQ" sweep wait "$id" >/dev/null
    echo "== busy trainers: 16 trials of 2 epochs on mlq up --trainers 2 (heartbeat 1000 ms)"
    q "WITH t AS (SELECT trainer, started, finished, lead(started) OVER (PARTITION BY trainer
         ORDER BY started) AS next FROM jobs WHERE sweep = $id),
       last AS (SELECT max(started) AS s FROM jobs WHERE sweep = $id)
       SELECT 'trainer ' || trainer || ': ' || count(*) || ' trials, longest idle gap '
              || printf('%.1f', coalesce(max(next - finished), 0) * 1000) || ' ms, mean '
              || printf('%.1f', coalesce(avg(next - finished), 0) * 1000) || ' ms'
       FROM t, last WHERE next IS NULL OR next <= last.s GROUP BY trainer"
    kill -INT "${PIDS[-1]}" 2>/dev/null || true
    wait 2>/dev/null || true
    PIDS=()
fi
