#!/usr/bin/env bash
# Dataset transfer benchmark (issue 16): a push to the broker and a fetch back
# (mlq dataset push / get) of one file against a plain local copy of it
# (cp + fsync, the issue's yardstick), on a local broker over ipc with its own
# database and store in a temporary directory. The file is Fashion-MNIST's
# training set (import-idx) followed by --pad-mb MB of noise, which HDF5
# ignores, so that the transfer dominates. Prints seconds and MB/s of each
# and the ratios; the push's transfer alone (hashing and the local check
# excluded) is the "sent in" figure of mlq dataset push.
# usage: bench/dataset_bench.sh [--build DIR] [--pad-mb N] [--runs N] [--keep]
set -euo pipefail
build=build
pad=300
runs=3
keep=""
while [ $# -gt 0 ]; do
    case $1 in
    --build) build=$2; shift 2 ;;
    --pad-mb) pad=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --keep) keep=yes; shift ;;
    -h | --help) sed -n 2,10p "$0"; exit 0 ;;
    *) echo "dataset_bench: unknown argument $1" >&2; exit 2 ;;
    esac
done
build=$(cd "$build" && pwd)
export PATH=$build/cli:$build/broker:$PATH
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mlq-dataset-bench-XXXXXX")
broker_pid=""
cleanup() {
    [ -n "$broker_pid" ] && kill -INT "$broker_pid" 2>/dev/null && wait "$broker_pid" 2>/dev/null
    [ -n "$keep" ] && echo "kept $tmp" || rm -rf "$tmp"
}
trap cleanup EXIT
export HOME=$tmp/home MLQ_CONFIG=$tmp/none.conf MLQ_BROKER=ipc://$tmp/broker.sock
mkdir -p "$HOME"
: >"$MLQ_CONFIG"
fm=/usr/share/datasets/fashion-mnist
mlq dataset import-idx "$fm/train-images-idx3-ubyte.gz" "$fm/train-labels-idx1-ubyte.gz" \
    --output "$tmp/fm.h5" >/dev/null
{ cat "$tmp/fm.h5"; head -c $((pad * 1000000)) /dev/urandom; } >"$tmp/data.h5"
size=$(stat -c %s "$tmp/data.h5")
mlq-broker --db "$tmp/mlq.db" --bind "$MLQ_BROKER" >"$tmp/broker.log" 2>&1 &
broker_pid=$!
for _ in $(seq 100); do mlq dataset ls >/dev/null 2>&1 && break; sleep 0.1; done
now() { date +%s.%N; }
mbs() { awk -v b="$size" -v s="$1" 'BEGIN { printf "%.0f", b / 1e6 / s }'; }
echo "file: $((size / 1000000)) MB; $runs runs each, the best kept"
best_cp=999 best_push=999 best_sent=999 best_get=999
for _ in $(seq "$runs"); do
    rm -f "$tmp/copy.h5"
    sync
    t0=$(now)
    cp "$tmp/data.h5" "$tmp/copy.h5" && sync "$tmp/copy.h5"
    t=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { print b - a }')
    best_cp=$(awk -v a="$best_cp" -v b="$t" 'BEGIN { print (b < a ? b : a) }')
    mlq dataset rm data >/dev/null 2>&1 || true
    sleep 1.5 # the removed object goes at the broker's next pass
    sync
    t0=$(now)
    out=$(mlq dataset push "$tmp/data.h5" --json)
    t=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { print b - a }')
    sent=$(echo "$out" | /usr/bin/python3 -c "import json,sys; print(json.load(sys.stdin)['seconds'])")
    best_push=$(awk -v a="$best_push" -v b="$t" 'BEGIN { print (b < a ? b : a) }')
    best_sent=$(awk -v a="$best_sent" -v b="$sent" 'BEGIN { print (b < a ? b : a) }')
    rm -f "$tmp/got.h5"
    t0=$(now)
    mlq dataset get data --output "$tmp/got.h5" >/dev/null
    t=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { print b - a }')
    best_get=$(awk -v a="$best_get" -v b="$t" 'BEGIN { print (b < a ? b : a) }')
    cmp -s "$tmp/got.h5" "$tmp/data.h5" || { echo "dataset_bench: get returned other bytes" >&2; exit 1; }
done
printf '%-34s %7.2f s %6s MB/s\n' "cp + fsync" "$best_cp" "$(mbs "$best_cp")"
printf '%-34s %7.2f s %6s MB/s  %.2fx cp\n' "push: the transfer (to END's OK)" "$best_sent" \
    "$(mbs "$best_sent")" "$(awk -v a="$best_cp" -v b="$best_sent" 'BEGIN { print a / b }')"
printf '%-34s %7.2f s %6s MB/s  %.2fx cp\n' "push: the command (check, hash)" "$best_push" \
    "$(mbs "$best_push")" "$(awk -v a="$best_cp" -v b="$best_push" 'BEGIN { print a / b }')"
printf '%-34s %7.2f s %6s MB/s  %.2fx cp\n' "get (verify, fsync, rename)" "$best_get" \
    "$(mbs "$best_get")" "$(awk -v a="$best_cp" -v b="$best_get" 'BEGIN { print a / b }')"
