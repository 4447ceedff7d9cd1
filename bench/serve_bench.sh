#!/usr/bin/env bash
# Serving benchmark (issue 13): mlq's deployments through the broker against a
# minimal PyTorch server, driven by the same load generator (bench/serve_load.c).
#
# Trains the seed MLP (784-128-64-10, ReLU) on Fashion-MNIST for one epoch,
# exports it (mlq export) for the peer (bench/torch_serve.py: a pyzmq ROUTER
# loop around torch.inference_mode(), one request at a time), deploys it, and
# measures, side by side in one run, one row per request:
#   1 client:    p50 and p99 latency, requests/s (INFER_BIN, and INFER: the JSON form)
#   64 clients:  requests/s, p50 and p99, rows per forward pass (mlq)
#   64 clients with one of two replicas killed (SIGKILL) mid-run: failed requests
#   the ceiling: 64 clients against bench/null_serve (a C ROUTER that answers
#                without a model), what the load generator and the transport
#                leave of this machine for any one-hop server
# Prints one table; docs/benchmarks.md ("Serving") keeps the figures.
#
# Both sides run one compute thread (the replica's OpenBLAS, torch's intra-op
# pool) on the OpenBLAS kernel named by OPENBLAS_CORETYPE, left as the
# environment has it; the trainer's log names it.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: bench/serve_bench.sh [--build DIR] [--seconds S] [--clients N] [--transport tcp|ipc]
                            [--no-torch]

  --build DIR   build tree with cli/mlq, broker/, trainer/ and bench/serve_load
                (default: build-bench in the source tree, configured and built if needed)
  --seconds S   measured seconds per figure (default 5), after 1 s of warm-up
  --clients N   the concurrent clients of the load figures (default 64)
  --transport T tcp (default: loopback TCP, as clients on other hosts reach a broker) or
                ipc (Unix sockets, as clients on the broker's host can), the same for both
                sides: the load generator, the broker, its trainers and the peer
  --no-torch    mlq only
EOF
}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=""
SECONDS_=5
CLIENTS=64
TORCH=1
TRANSPORT=tcp
FMNIST=${FMNIST:-/usr/share/datasets/fashion-mnist}
PY=/usr/bin/python3
while [ $# -gt 0 ]; do
    case "$1" in
    --build) BUILD=$2; shift 2 ;;
    --seconds) SECONDS_=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --transport) TRANSPORT=$2; shift 2 ;;
    --no-torch) TORCH=0; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
done
die() { echo "serve_bench: $*" >&2; exit 1; }

if [ -z "$BUILD" ]; then
    BUILD=$ROOT/build-bench
    [ -f "$BUILD/CMakeCache.txt" ] || cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build "$BUILD" -j"$(nproc)" --target mlq mlq-broker mlq-trainer serve_load null_serve >/dev/null
fi
MLQ=$BUILD/cli/mlq LOAD=$BUILD/bench/serve_load NULL=$BUILD/bench/null_serve
[ -x "$MLQ" ] && [ -x "$LOAD" ] && [ -x "$NULL" ] || die "no mlq, serve_load or null_serve in $BUILD"
if [ $TORCH = 1 ]; then
    $PY -c "import torch, zmq, h5py" 2>/dev/null ||
        die "the peer needs python3-torch, python3-zmq, python3-h5py (scripts/install-deps.sh --bench), or --no-torch"
fi

tmp=$(mktemp -d /tmp/mlq-serve-bench-XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
: >"$tmp/mlq.conf"
export MLQ_CONFIG=$tmp/mlq.conf XDG_CONFIG_HOME=$tmp MLQ_DB=$tmp/mlq.db
case "$TRANSPORT" in
tcp) port=$((20000 + RANDOM % 40000))
     EP=tcp://127.0.0.1:$port PEER=tcp://127.0.0.1:$((port + 1)) CEIL=tcp://127.0.0.1:$((port + 2)) ;;
ipc) EP=ipc://$tmp/broker.sock PEER=ipc://$tmp/peer.sock CEIL=ipc://$tmp/null.sock ;;
*) die "--transport is tcp or ipc, not $TRANSPORT" ;;
esac

"$MLQ" dataset import-idx "$FMNIST/train-images-idx3-ubyte.gz" "$FMNIST/train-labels-idx1-ubyte.gz" \
    --output "$tmp/train.h5" >/dev/null
"$BUILD/broker/mlq-broker" --db "$tmp/mlq.db" --bind "$EP" >"$tmp/broker.log" 2>&1 & pids+=($!)
export MLQ_BROKER=$EP
trainer_pids=()
for t in t1 t2 t3; do
    "$BUILD/trainer/mlq-trainer" --broker "$EP" --name $t --threads 1 >"$tmp/$t.log" 2>&1 &
    pids+=($!) trainer_pids+=($!)
done
for _ in $(seq 50); do "$MLQ" queue >/dev/null 2>&1 && break; sleep 0.1; done
sed -e "s|data/fashion-mnist-train.h5|$tmp/train.h5|" -e '/validation/d' -e 's/"epochs": 10/"epochs": 1/' \
    "$ROOT/examples/seed-mlp.json" >"$tmp/seed.json"
"$MLQ" submit --spec "$tmp/seed.json" --wait >/dev/null || die "training failed: see $tmp"
run=1
"$MLQ" export "$run" --output "$tmp/model.h5" >/dev/null
kernel=$(grep -o "OpenBLAS kernel [A-Za-z0-9_]*" "$tmp/t1.log" | head -1 | awk '{print $3}')

row() { # NAME JSON
    $PY - "$1" "$2" <<'PY'
import json, sys
name, d = sys.argv[1], json.loads(sys.argv[2])
extra = " rows/forward %.1f" % d["batch"] if "batch" in d else ""
err = "  first error: %s" % d["first_error"] if "first_error" in d else ""
print("%-34s %9.0f req/s  p50 %7.0f us  p99 %7.0f us  errors %d%s%s" % (
    name, d["rps"], d["p50_us"], d["p99_us"], d["errors"], extra, err))
PY
}
measure() { "$LOAD" "$@" --seconds "$SECONDS_" --warmup 1 || true; }

"$MLQ" deploy "$run" --name seed --replicas 1 >/dev/null
m1=$(measure --mlq "$EP" --deployment seed --clients 1)
m1j=$(measure --mlq "$EP" --deployment seed --clients 1 --json)
mN=$(measure --mlq "$EP" --deployment seed --clients "$CLIENTS")
mNj=$(measure --mlq "$EP" --deployment seed --clients "$CLIENTS" --json)
"$MLQ" deploy "$run" --name seed --replicas 2 >/dev/null
mN2=$(measure --mlq "$EP" --deployment seed --clients "$CLIENTS")
rpf=$("$MLQ" deployments --json | $PY -c "import json,sys; print('%.1f' % json.load(sys.stdin)['deployments'][0]['rows_per_forward'])")
if [ $TORCH = 1 ]; then
    OPENBLAS_NUM_THREADS=1 $PY "$ROOT/bench/torch_serve.py" "$tmp/model.h5" "$PEER" --threads 1 \
        >"$tmp/peer.log" 2>&1 & peer=$!
    pids+=($peer)
    for _ in $(seq 100); do grep -q listening "$tmp/peer.log" 2>/dev/null && break; sleep 0.1; done
    p1=$(measure --raw "$PEER" --clients 1)
    pN=$(measure --raw "$PEER" --clients "$CLIENTS")
    kill "$peer"
fi
"$NULL" "$CEIL" >"$tmp/null.log" 2>&1 & nullpid=$!
pids+=($nullpid)
for _ in $(seq 100); do grep -q listening "$tmp/null.log" 2>/dev/null && break; sleep 0.1; done
c1=$(measure --raw "$CEIL" --clients 1)
cN=$(measure --raw "$CEIL" --clients "$CLIENTS")
kill "$nullpid"
# A replica killed under load: whichever serves; the spare trainer takes its place.
victim=$("$MLQ" deployments --json | $PY -c "import json,sys; print(json.load(sys.stdin)['deployments'][0]['replica_list'][0]['trainer'])")
vpid=${trainer_pids[$(( ${victim#t} - 1 ))]}
( sleep 2; kill -9 "$vpid" ) &
mK=$(measure --mlq "$EP" --deployment seed --clients "$CLIENTS")

echo "serving benchmark: seed MLP 784-128-64-10 (run $run), one row per request, over $TRANSPORT"
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), OpenBLAS kernel ${kernel:-unknown}" \
     "(OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}), autogroup $(cat /proc/sys/kernel/sched_autogroup_enabled 2>/dev/null || echo ?)"
row "mlq, 1 client" "$m1"
row "mlq, 1 client, JSON INFER" "$m1j"
[ $TORCH = 1 ] && row "torch peer, 1 client" "$p1"
row "mlq, $CLIENTS clients, 1 replica" "$mN"
row "mlq, $CLIENTS clients, 1 replica, JSON" "$mNj"
row "mlq, $CLIENTS clients, 2 replicas" "$mN2"
[ $TORCH = 1 ] && row "torch peer, $CLIENTS clients" "$pN"
row "mlq, $CLIENTS clients, replica killed" "$mK"
row "ceiling (null_serve), 1 client" "$c1"
row "ceiling (null_serve), $CLIENTS clients" "$cN"
echo "rows per forward pass, all the runs above together (DEPLOYMENTS rows_per_forward): $rpf"
if [ $TORCH = 1 ]; then
    $PY - "$mN" "$mN2" "$pN" "$cN" <<'PY'
import json, sys
a, b, p, c = (json.loads(s) for s in sys.argv[1:])
best = max(a, b, key=lambda d: d["rps"])
print("throughput at %d clients: %.1fx the peer's; p99 %.0f us vs %.0f us" % (
    best["clients"], best["rps"] / p["rps"], best["p99_us"], p["p99_us"]))
print("the ceiling (a server that only answers) is %.1fx the peer's" % (c["rps"] / p["rps"]))
PY
fi
