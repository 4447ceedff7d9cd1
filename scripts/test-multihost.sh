#!/usr/bin/env bash
# Several hosts on one machine: a broker host and two trainer hosts, each in a
# network namespace of its own, joined by veth links. The trainer hosts have
# no copy of the data and no shared directory: the client pushes datasets to
# the broker (mlq dataset push) and the trainers fetch them into their own
# caches: the first fetch, a cached second run that moves no bytes, and a
# trainer killed mid-fetch (its link slowed by tc) that resumes where it
# stopped. Then one trainer host is cut off the network mid-job: the broker
# gives its job to the other host, which finishes it, and the cut-off trainer
# rejoins when the link comes back.
#
# usage: scripts/test-multihost.sh [BUILD_DIR]     (root; default build/)
#        scripts/test-multihost.sh --check         exit 0 if this host can run it, 77 if not
set -uo pipefail
cd "$(dirname "$0")/.."

ns_b=mlqmh-broker ns_1=mlqmh-host1 ns_2=mlqmh-host2
can_run() {
    [ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)"; return 1; }
    command -v ip >/dev/null || { echo "needs iproute2"; return 1; }
    ip netns add mlqmh-probe 2>/dev/null || { echo "cannot create network namespaces here"; return 1; }
    ip netns del mlqmh-probe
}
if [ "${1:-}" = "--check" ]; then
    why=$(can_run) && exit 0
    echo "$why"
    exit 77
fi
why=$(can_run) || { echo "test-multihost: SKIP: $why"; exit 77; }

build=$(cd "${1:-build}" && pwd) || exit 1
export PATH=$build/cli:$build/broker:$build/trainer:$PATH
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mlq-multihost-XXXXXX")
passed=0 failed=0 pids=()
start=$SECONDS

cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
    for n in $ns_b $ns_1 $ns_2; do ip netns del $n 2>/dev/null; done
    rm -rf "$tmp"
}
trap cleanup EXIT

check() {
    local what=$1
    shift
    if "$@"; then
        echo "ok   $what"
        passed=$((passed + 1))
    else
        echo "FAIL $what"
        failed=$((failed + 1))
    fi
}
wait_for() {
    local secs=$1
    shift
    local end=$((SECONDS + secs))
    while [ $SECONDS -lt $end ]; do
        "$@" && return 0
        sleep 0.2
    done
    "$@"
}
in_b() { ip netns exec $ns_b env MLQ_CONFIG=/dev/null MLQ_DB="$tmp/mlq.db" \
    MLQ_BROKER=tcp://127.0.0.1:5555 MLQ_CLIENT_SECRET_KEY="$tmp/user/mlq.key_secret" "$@"; }

# The network: host1 (10.77.1.2) and host2 (10.77.2.2) each reach the broker
# host on a link of their own.
for n in $ns_b $ns_1 $ns_2; do ip netns del $n 2>/dev/null; ip netns add $n; done
for i in 1 2; do
    ns=mlqmh-host$i
    ip link add mh-b$i netns $ns_b type veth peer name mh-h$i netns $ns
    ip -n $ns_b addr add 10.77.$i.1/24 dev mh-b$i
    ip -n $ns addr add 10.77.$i.2/24 dev mh-h$i
    ip -n $ns_b link set mh-b$i up
    ip -n $ns link set mh-h$i up
    ip -n $ns link set lo up
done
ip -n $ns_b link set lo up

# The data lives on the client (the broker host) only: a small three-class
# set and Fashion-MNIST, all 60,000 training images and the first 50,000.
awk 'BEGIN { srand(3); for (i = 0; i < 3000; i++) { c = i % 3; row = "";
       for (j = 0; j < 8; j++) row = row (j ? "," : "") (rand() - 0.5 + (j == c ? 2 : 0));
       print row "," c } }' >"$tmp/data.csv"
mkdir -p "$tmp/client"
mlq dataset import-csv "$tmp/data.csv" --output "$tmp/client/data.h5" >/dev/null
fm=/usr/share/datasets/fashion-mnist
mlq dataset import-idx $fm/train-images-idx3-ubyte.gz $fm/train-labels-idx1-ubyte.gz \
    --output "$tmp/client/fmnist-train.h5" >/dev/null
mlq dataset import-idx $fm/train-images-idx3-ubyte.gz $fm/train-labels-idx1-ubyte.gz \
    --limit 50000 --output "$tmp/client/fmnist-50k.h5" >/dev/null

# Keys (docs/security.md): the broker's; one per trainer host, each with the
# broker's public key pinned next to its own; the client's (an admin).
mkdir -p "$tmp/etc/users" "$tmp/etc/trainers" "$tmp/keys1" "$tmp/keys2" "$tmp/user"
dirs=(--users-dir "$tmp/etc/users" --trainers-dir "$tmp/etc/trainers")
MLQ_CONFIG=/dev/null mlq keygen --name broker --role broker --out "$tmp/etc/broker" >/dev/null
for i in 1 2; do
    MLQ_CONFIG=/dev/null mlq keygen --name host$i --role trainer --out "$tmp/keys$i/trainer" >/dev/null
    cp "$tmp/etc/broker.key" "$tmp/keys$i/broker.key"
    MLQ_CONFIG=/dev/null mlq keys add "$tmp/keys$i/trainer.key" "${dirs[@]}" >/dev/null
done
MLQ_CONFIG=/dev/null mlq keygen --name tester --role admin --out "$tmp/user/mlq" >/dev/null
cp "$tmp/etc/broker.key" "$tmp/user/broker.key"
MLQ_CONFIG=/dev/null mlq keys add "$tmp/user/mlq.key" "${dirs[@]}" >/dev/null

plaintext_refused() {
    ! ip netns exec $ns_b env MLQ_CONFIG=/dev/null mlq-broker --db "$tmp/plain.db" \
        --bind tcp://0.0.0.0:5556 >"$tmp/plain.log" 2>&1 && grep -q "in plaintext" "$tmp/plain.log"
}
check "a broker without keys refuses to listen on 0.0.0.0" plaintext_refused

ip netns exec $ns_b env MLQ_CONFIG=/dev/null mlq-broker --db "$tmp/mlq.db" \
    --bind tcp://0.0.0.0:5555 --secret-key "$tmp/etc/broker.key_secret" "${dirs[@]}" \
    --heartbeat-ms 200 --liveness 3 >"$tmp/broker.log" 2>&1 &
pids+=($!)
# A trainer host: its own key and its own dataset cache, nothing shared.
trainer_pid=()
trainer_up() {
    ip netns exec mlqmh-host$1 env MLQ_CONFIG=/dev/null \
        mlq-trainer --broker tcp://10.77.$1.1:5555 --name host$1 --threads 1 \
        --secret-key "$tmp/keys$1/trainer.key_secret" --dataset-cache-dir "$tmp/cache$1" \
        --heartbeat-ms 200 --liveness 3 >>"$tmp/host$1.log" 2>&1 &
    trainer_pid[$1]=$!
    pids+=($!)
}
trainer_up 1
trainer_up 2

two_workers() {
    local w
    w=$(in_b mlq workers 2>/dev/null) || return 1
    grep -q "^host1 " <<<"$w" && grep -q "^host2 " <<<"$w"
}
check "broker host sees trainers host1 and host2 over the network" wait_for 20 two_workers
both_pinned() {
    grep -q "pinned from $tmp/keys1/broker.key" "$tmp/host1.log" &&
        grep -q "pinned from $tmp/keys2/broker.key" "$tmp/host2.log"
}
check "both trainers pinned the broker's key (host1's and host2's own copy)" both_pinned

# Over the network, without the right keys: nothing.
stranger_refused() {
    mkdir -p "$tmp/stranger"
    MLQ_CONFIG=/dev/null mlq keygen --name stranger --out "$tmp/stranger/mlq" >/dev/null
    cp "$tmp/etc/broker.key" "$tmp/stranger/broker.key"
    ip netns exec $ns_1 env MLQ_CONFIG=/dev/null MLQ_BROKER=tcp://10.77.1.1:5555 \
        MLQ_CLIENT_SECRET_KEY="$tmp/stranger/mlq.key_secret" mlq queue >"$tmp/stranger.out" 2>&1
    [ $? = 6 ] && grep -q "refused this key" "$tmp/stranger.out"
}
check "an unknown key from host1 is refused" stranger_refused
plaintext_client_refused() {
    ip netns exec $ns_1 env MLQ_CONFIG=/dev/null XDG_CONFIG_HOME="$tmp/none" \
        MLQ_BROKER=tcp://10.77.1.1:5555 mlq queue >"$tmp/plainclient.out" 2>&1
    # "requires keys" when it sees the broker's greeting; under load the
    # broker may hang up first, and then it times out: nothing either way.
    [ $? = 6 ] && grep -Eq "requires keys|cannot reach" "$tmp/plainclient.out" ||
        { sed 's/^/     /' "$tmp/plainclient.out"; return 1; }
}
check "a plaintext client from host1 gets nothing" plaintext_client_refused

# Pushed once from the client; the trainer hosts have none of it.
push() { # FILE NAME: prints the sha256
    in_b mlq dataset push "$1" --name "$2" --json | /usr/bin/python3 -c \
        'import json, sys; print(json.load(sys.stdin)["sha256"])'
}
data_sha=$(push "$tmp/client/data.h5" mh-data)
fm_sha=$(push "$tmp/client/fmnist-train.h5" fmnist-train)
listed() { [ "$(in_b mlq dataset ls --json | grep -o '"sha256"' | wc -l)" = 2 ]; }
check "the client pushed its datasets (mlq dataset ls)" listed

job_state() { in_b mlq show "$1" --json 2>/dev/null | grep -o '"state": "[a-z]*"' | head -n 1; }
all_done() {
    local id
    for id in "$@"; do
        [ "$(job_state "$id")" = '"state": "succeeded"' ] || return 1
    done
}
# Four jobs naming the pushed dataset.
ids=()
for s in 1 2 3 4; do
    ids+=("$(in_b mlq submit --dataset-name mh-data --layers 8,32,3 --epochs 20 --seed $s \
        --name mh-$s)")
done
check "four jobs on a pushed dataset succeeded on hosts that had no copy" \
    wait_for 60 all_done "${ids[@]}"
both_used() {
    local t
    t=$(for id in "${ids[@]}"; do in_b mlq show "$id" --json | grep -o '"trainer": "[a-z0-9]*"'; done)
    grep -q host1 <<<"$t" && grep -q host2 <<<"$t"
}
check "both hosts took jobs" both_used
recorded() {
    local id
    for id in "${ids[@]}"; do
        in_b mlq show "$id" --json | grep -q "\"dataset_sha256\": \"$data_sha\"" || return 1
    done
}
check "each run records the hash of the data it read" recorded

# Fashion-MNIST: fetched once per host, then cached (0 bytes moved).
fm_ids=()
for s in 1 2 3 4; do
    fm_ids+=("$(in_b mlq submit --dataset-name fmnist-train --layers 784,10 --epochs 1 \
        --batch-size 1024 --seed $s --name fm-$s)")
done
check "four Fashion-MNIST jobs succeeded" wait_for 120 all_done "${fm_ids[@]}"
fetches() { cat "$tmp/host1.log" "$tmp/host2.log" | grep -c "dataset $fm_sha fetched" || true; }
cached() { cat "$tmp/host1.log" "$tmp/host2.log" | grep -c "dataset $fm_sha cached" || true; }
check "Fashion-MNIST fetched at most once per host ($(fetches) fetches), cached after ($(cached) runs moved 0 bytes)" \
    test "$(fetches)" -ge 1 -a "$(fetches)" -le 2 -a "$(cached)" -ge 2

# Predictions come back to the client's host the same way (mlq predict --push).
pred=$(in_b sh -c "cd '$tmp/client' && mlq predict ${ids[0]} --input data.h5 --output preds.h5 --push" |
    head -n 1)
pred_back() {
    local sha
    [ -f "$tmp/client/preds.h5" ] || return 1
    sha=$(sha256sum "$tmp/client/preds.h5" | cut -c1-64)
    in_b mlq show "$pred" --json | grep -q "\"output_sha256\": \"$sha\"" &&
        in_b mlq dataset ls | grep -q "^predict-$pred "
}
check "predict --push: its output came back to the client's host, the bytes its run names" pred_back

# A trainer killed mid-fetch resumes where it stopped: host2 away, host1's
# link slowed to 40 Mbit/s (a 22 MB fetch takes about 5 s), host1 killed once
# its part holds 4 MB, and started again on the same cache.
kill "${trainer_pid[2]}"
wait "${trainer_pid[2]}" 2>/dev/null
tc -n $ns_b qdisc add dev mh-b1 root tbf rate 40mbit burst 32kbit latency 400ms
k_sha=$(push "$tmp/client/fmnist-50k.h5" fmnist-50k)
kid=$(in_b mlq submit --dataset-name fmnist-50k --layers 784,10 --epochs 1 --batch-size 1024 \
    --name fm-killed)
part=$tmp/cache1/partial/$k_sha.part
part_started() { [ -f "$part" ] && [ "$(stat -c %s "$part")" -ge 4194304 ]; }
check "host1 fetching fmnist-50k over the slowed link" wait_for 30 part_started
kill -9 "${trainer_pid[1]}"
wait "${trainer_pid[1]}" 2>/dev/null
tc -n $ns_b qdisc del dev mh-b1 root
trainer_up 1
check "the killed trainer's job succeeded after it came back" wait_for 60 all_done "$kid"
resumed() { grep -q "dataset $k_sha: resuming the fetch at [1-9][0-9]* MB" "$tmp/host1.log"; }
check "its fetch resumed from the part it had, not from byte 0" resumed
trainer_up 2

# A partition: the host running a long job loses its link.
long=$(in_b mlq submit --dataset-name mh-data --layers 8,512,512,3 \
    --epochs 400 --batch-size 8 --name mh-long)
runner() { in_b mlq show "$long" --json | grep -o '"trainer": "host[12]"' | grep -o 'host[12]'; }
running_on() { [ -n "$(runner)" ] && in_b mlq metrics "$long" --json | grep -q '"epoch"'; }
check "long job $long running with a checkpoint" wait_for 30 running_on
victim=$(runner)
n=${victim#host}
ip -n $ns_b link set mh-b$n down
moved() {
    local t
    t=$(in_b mlq show "$long" --json | grep -o '"trainer": "host[12]"' | grep -o 'host[12]')
    [ -n "$t" ] && [ "$t" != "$victim" ]
}
check "the job moved off the cut-off $victim" wait_for 30 moved
ip -n $ns_b link set mh-b$n up
check "$victim rejoins when its link is back" wait_for 30 two_workers
long_done() {
    in_b mlq show "$long" --json | grep -q '"state": "succeeded"'
}
# 400 epochs take about a minute on an idle 2-core machine; allow for a loaded one.
check "the long job succeeded on the other host" wait_for 300 long_done
attempts=$(in_b mlq show "$long" --json | grep -o '"attempts": [0-9]*' | grep -o '[0-9]*$')
check "its attempts: 2 (one lost to the partition)" test "$attempts" = 2
epochs=$(in_b mlq metrics "$long" --key train_loss --json | grep -c '"epoch"')
check "every epoch's metric stored once ($epochs of 400)" test "$epochs" = 400

if [ $failed != 0 ]; then
    echo "--- broker log"; tail -n 20 "$tmp/broker.log"
    for i in 1 2; do echo "--- host$i log"; tail -n 10 "$tmp/host$i.log"; done
fi
echo "multihost: $passed passed, $failed failed ($((SECONDS - start)) s)"
[ $failed = 0 ]
