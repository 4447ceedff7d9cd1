#!/usr/bin/env bash
# Dataset transfer benchmark (issue 16, docs/benchmarks.md "Pushed datasets"):
#
# 1. A push (mlq dataset push) and a fetch (mlq dataset get) of FILE against a
#    plain local copy of the same file (cp, then sync FILE: its fsync), each
#    the median of RUNS; every push moves every byte (the name and its object
#    are removed before each).
# 2. Trainers fetching: N trainers with empty caches each get a job naming
#    the pushed dataset at once; each one's fetch time (its log's "fetched"
#    line) against one trainer alone, and a second job on a cached trainer
#    (0 bytes moved).
# 3. Dispatch latency while a transfer runs: broker_bench's submit-to-dispatch
#    p50/p99 alone and with fetches of FILE looping against the same broker
#    (mlq dataset get into /dev/shm: a fetcher on another host does not fsync
#    on the broker's disk; here its 200 MB fsyncs would be what the broker's
#    commits wait for), then with the fetcher at nice 19 (nor does it take
#    the broker host's cores).
#
# FILE is Fashion-MNIST's training set as mlq dataset import-idx writes it
# (27 MB), followed by --pad-mb MB of noise (default 200), which HDF5 ignores,
# so that the transfer, not the start of a command, is what is timed; part 2
# fetches it too. Everything runs on a local broker over ipc with its own
# database and store in a temporary directory.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: bench/dataset_bench.sh [--build DIR] [--runs N] [--trainers N] [--pad-mb MB]
                              [--no-latency] [--keep]

  --build DIR    build tree with cli/mlq, broker/mlq-broker, trainer/mlq-trainer and
                 bench/broker_bench (default: build-bench, configured and built if needed)
  --runs N       runs of each timing, the median printed (default 5)
  --trainers N   trainers fetching at once in part 2 (default 4)
  --pad-mb MB    noise after the HDF5 file's end (default 200; 0: Fashion-MNIST alone)
  --cache-base D the trainers' caches under D (default: the temporary directory; /dev/shm
                 takes the disk out: N trainers on one host share its disk, on N hosts they
                 would not)
  --no-latency   skip part 3; --keep keeps the temporary directory
EOF
}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=""
RUNS=5
NTRAINERS=4
PAD=200
LATENCY=1
KEEP=0
CACHE_BASE=""
FMNIST=${FMNIST:-/usr/share/datasets/fashion-mnist}
while [ $# -gt 0 ]; do
    case "$1" in
    --build) BUILD=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --trainers) NTRAINERS=$2; shift 2 ;;
    --pad-mb) PAD=$2; shift 2 ;;
    --cache-base) CACHE_BASE=$2; shift 2 ;;
    --no-latency) LATENCY=0; shift ;;
    --keep) KEEP=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
done
die() { echo "dataset_bench: $*" >&2; exit 1; }

if [ -z "$BUILD" ]; then
    BUILD=$ROOT/build-bench
    if [ ! -x "$BUILD/cli/mlq" ] || [ ! -x "$BUILD/bench/broker_bench" ]; then
        echo "building mlq in $BUILD ..." >&2
        cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
        cmake --build "$BUILD" -j2 --target mlq mlq-broker mlq-trainer broker_bench >/dev/null
    fi
fi
MLQ=$BUILD/cli/mlq
[ -r "$FMNIST/train-images-idx3-ubyte.gz" ] || die "no Fashion-MNIST in $FMNIST"

TMP=$(mktemp -d /tmp/mlq-dataset-bench-XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ "$KEEP" = 1 ] && echo "kept $TMP" >&2 || rm -rf "$TMP"
}
trap cleanup EXIT
[ -n "$CACHE_BASE" ] || CACHE_BASE=$TMP
CACHES=$(mktemp -d "$CACHE_BASE/mlq-dataset-bench-caches-XXXXXX")
trap 'rm -rf "$CACHES"; cleanup' EXIT
export MLQ_CONFIG=$TMP/empty.conf XDG_CONFIG_HOME=$TMP
: >"$MLQ_CONFIG"
export MLQ_BROKER=ipc://$TMP/broker.sock MLQ_DB=$TMP/mlq.db

now() { date +%s.%N; }
# median of the numbers on stdin
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
mb() { awk -v b="$(stat -c %s "$1")" 'BEGIN { printf "%.1f", b / 1048576 }'; }

"$MLQ" dataset import-idx "$FMNIST/train-images-idx3-ubyte.gz" "$FMNIST/train-labels-idx1-ubyte.gz" \
    --output "$TMP/fmnist-train.h5" >/dev/null
{ cat "$TMP/fmnist-train.h5"; head -c $((PAD * 1048576)) /dev/urandom; } >"$TMP/data.h5"
FILES=("$TMP/data.h5")

"$BUILD/broker/mlq-broker" --db "$MLQ_DB" --bind "$MLQ_BROKER" >"$TMP/broker.log" 2>&1 &
BROKER_PID=$!
PIDS+=($!)
# the broker's CPU seconds so far (user + system)
broker_cpu() { awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$BROKER_PID/stat"; }
for _ in $(seq 100); do "$MLQ" queue >/dev/null 2>&1 && break; sleep 0.1; done
"$MLQ" queue >/dev/null || die "the broker did not start: $(cat "$TMP/broker.log")"

echo "OpenBLAS kernel: not used (byte transfer); CPU $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"

# ---- 1. push and fetch against cp + fsync ----
for f in "${FILES[@]}"; do
    size=$(mb "$f")
    for _ in $(seq "$RUNS"); do
        rm -f "$TMP/copy.h5"
        t0=$(now); cp "$f" "$TMP/copy.h5"; sync "$TMP/copy.h5"; t1=$(now)
        echo "$t1 - $t0" | bc -l >>"$TMP/cp.t"
        "$MLQ" dataset rm bench >/dev/null 2>&1 || true
        sleep 1.5 # the removed object goes at the broker's next pass
        t0=$(now); "$MLQ" dataset push "$f" --name bench --json >"$TMP/push.json"; t1=$(now)
        echo "$t1 - $t0" | bc -l >>"$TMP/push.t"
        /usr/bin/python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['seconds'])" \
            "$TMP/push.json" >>"$TMP/sent.t"
        rm -f "$TMP/got.h5"
        t0=$(now); "$MLQ" dataset get bench --output "$TMP/got.h5" >/dev/null; t1=$(now)
        echo "$t1 - $t0" | bc -l >>"$TMP/get.t"
        cmp -s "$f" "$TMP/got.h5" || die "mlq dataset get gave other bytes than were pushed"
    done
    cp_t=$(median <"$TMP/cp.t") push_t=$(median <"$TMP/push.t") get_t=$(median <"$TMP/get.t")
    sent_t=$(median <"$TMP/sent.t")
    rm -f "$TMP"/*.t
    awk -v s="$size" -v c="$cp_t" -v p="$push_t" -v q="$sent_t" -v g="$get_t" -v r="$RUNS" 'BEGIN {
        printf "Fashion-MNIST + noise (%s MB), medians of %d runs (target: at least 0.5 of cp):\n", s, r
        printf "  cp + fsync                          %7.3f s %6.0f MB/s\n", c, s / c
        printf "  push, the command (check, hash)     %7.3f s %6.0f MB/s  %.2f of cp\n", p, s / p, c / p
        printf "  push, the transfer (to END'"'"'s OK)    %7.3f s %6.0f MB/s  %.2f of cp\n", q, s / q, c / q
        printf "  get (verify, fsync, rename)         %7.3f s %6.0f MB/s  %.2f of cp\n", g, s / g, c / g }'
done

# ---- 2. trainers fetching at once ----
"$MLQ" dataset rm bench >/dev/null 2>&1 || true
sleep 1.5
"$MLQ" dataset push "${FILES[-1]}" --name bench >/dev/null
spec() {
    cat <<EOF
{"kind": "train", "dataset": {"name": "bench"}, "model": {"layers": [784, 10]},
 "epochs": 1, "batch_size": 1024, "threads": 1, "memory_budget_mb": 64}
EOF
}
spec >"$TMP/job.json"
# fetch seconds of the jobs in $@ from trainer logs: "fetched ... in T s"
fetch_times() {
    for log in "$@"; do
        sed -n 's/.*fetched: .* in \([0-9.]*\) s.*/\1/p' "$log" | tail -n 1
    done
}
# the CPU seconds so far of the trainers start_trainers started (user + system)
trainers_cpu() {
    for p in "${TRAINER_PIDS[@]}"; do cat "/proc/$p/stat"; done |
        awk -v hz="$(getconf CLK_TCK)" '{ t += $14 + $15 } END { print t / hz }'
}
start_trainers() { # N: trainers with empty caches
    TRAINER_PIDS=()
    for i in $(seq "$1"); do
        rm -rf "$CACHES/cache$i"
        "$BUILD/trainer/mlq-trainer" --broker "$MLQ_BROKER" --name "t$i" --threads 1 \
            --dataset-cache-dir "$CACHES/cache$i" >"$TMP/trainer$i.log" 2>&1 &
        PIDS+=($!) TRAINER_PIDS+=($!)
    done
    for _ in $(seq 100); do
        [ "$("$MLQ" workers --json | grep -o '"name"' | wc -l)" -ge "$1" ] && break
        sleep 0.1
    done
}
stop_trainers() { # and until the broker has let them go (3 heartbeats of silence)
    pkill -f "mlq-trainer --broker $MLQ_BROKER" || true
    for _ in $(seq 100); do
        "$MLQ" workers --json | grep -q '"name"' || return 0
        sleep 0.1
    done
    die "the broker still lists stopped trainers: $("$MLQ" workers)"
}
for r in $(seq "$RUNS"); do
    start_trainers 1
    id=$("$MLQ" submit "$TMP/job.json")
    "$MLQ" wait --quiet "$id" || die "job $id: $("$MLQ" show "$id")"
    fetch_times "$TMP/trainer1.log" >>"$TMP/one.t"
    trainers_cpu >>"$TMP/onecpu.t"
    id=$("$MLQ" submit "$TMP/job.json")
    "$MLQ" wait --quiet "$id" || die "job $id: $("$MLQ" show "$id")"
    grep -c "fetched:" "$TMP/trainer1.log" | grep -qx 1 || die "the cached second run fetched again"
    stop_trainers
    start_trainers "$NTRAINERS"
    ids=()
    c0=$(broker_cpu)
    for _ in $(seq "$NTRAINERS"); do ids+=("$("$MLQ" submit "$TMP/job.json")"); done
    for id in "${ids[@]}"; do "$MLQ" wait --quiet "$id" || die "job $id: $("$MLQ" show "$id")"; done
    echo "$(broker_cpu) - $c0" | bc -l >>"$TMP/cpu.t"
    trainers_cpu >>"$TMP/manycpu.t"
    logs=()
    for i in $(seq "$NTRAINERS"); do logs+=("$TMP/trainer$i.log"); done
    fetch_times "${logs[@]}" | sort -g | tail -n 1 >>"$TMP/many.t"
    stop_trainers
done
one=$(median <"$TMP/one.t") many=$(median <"$TMP/many.t") cpu=$(median <"$TMP/cpu.t")
onecpu=$(median <"$TMP/onecpu.t") manycpu=$(median <"$TMP/manycpu.t")
awk -v f="$(basename "${FILES[-1]}")" -v s="$(mb "${FILES[-1]}")" -v o="$one" -v m="$many" -v n="$NTRAINERS" -v r="$RUNS" -v cb="$CACHE_BASE" -v c="$cpu" -v oc="$onecpu" -v mc="$manycpu" -v cores="$(nproc)" 'BEGIN {
    printf "trainer fetch of %s (%s MB) into caches under %s, medians of %d: one trainer %.3f s (%.0f MB/s); %d at once, the slowest %.3f s: %.2fx one (target <= 2); cached second run: 0 bytes moved\n",
        f, s, cb, r, o, s / o, n, m, m / o
    printf "  the broker'"'"'s CPU while the %d fetched (and trained): %.3f s\n", n, c
    printf "  the trainers'"'"' CPU, each fetching and training one epoch: one alone %.3f s; the %d together %.3f s, %.3f s of wall on %d cores at the least\n", oc, n, mc, mc / cores, cores }'

# ---- 3. dispatch latency while a transfer runs ----
if [ "$LATENCY" = 1 ]; then
    BB=$BUILD/bench/broker_bench
    f=${FILES[-1]}
    "$BB" --jobs 2000 --trainers 1 --window 1 --curve off --handshakes 0 --idle 0 | grep "^mlq"
    "$BB" --jobs 2000 --trainers 1 --window 1 --curve off --handshakes 0 --idle 0 \
        --during "\"$MLQ\" dataset push \"$f\" --name x >/dev/null && while :; do \"$MLQ\" dataset get x --output /dev/shm/mlq-dataset-bench-$$.h5 >/dev/null; done" |
        grep "^mlq" | sed 's/latency measured while running: .*/latency measured while mlq dataset get loops/'
    # The same with the fetcher at nice 19: it takes only the cycles the
    # broker and its clients leave, as a fetcher on another host would.
    "$BB" --jobs 2000 --trainers 1 --window 1 --curve off --handshakes 0 --idle 0 \
        --during "\"$MLQ\" dataset push \"$f\" --name x >/dev/null && while :; do nice -n 19 \"$MLQ\" dataset get x --output /dev/shm/mlq-dataset-bench-$$.h5 >/dev/null; done" |
        grep "^mlq" | sed 's/latency measured while running: .*/latency measured while mlq dataset get loops at nice 19/'
    rm -f /dev/shm/mlq-dataset-bench-$$.h5
fi
