#!/usr/bin/env bash
# Pushed datasets (issue 16) against a real mlq-broker, no trainer:
# - push prints name, hash and size; a second push sends 0 bytes;
# - a name held by other bytes is refused, then moved with --replace;
# - a file that is not HDF5 is refused before a byte is sent;
# - get round-trips the exact bytes (by name and by hash);
# - rm refused while a queued job names the dataset, then removes it;
# - submit naming a dataset that does not exist is refused (exit 2);
# - a push whose client is killed mid-transfer resumes where it stopped; a
#   push whose broker is killed and started again goes on (the client asks
#   where it stands); a push whose broker died leaves a .part that the next
#   push resumes from (a torn last chunk cut away); a .part of other bytes
#   fails the hash and is removed; a .part not written for 7 days is
#   removed when the broker starts, a younger one kept.
# usage: dataset_push.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1
. "$(dirname "$0")/lib.sh"
mlqt_cleanup_extra() { [ -n "${broker_pid:-}" ] && kill -9 "$broker_pid" 2>/dev/null; true; }
mlqt_init dataset_push "$build"
run() {
    set +e
    "$@" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    set -e
}
store=$tmp/datasets
broker_up() {
    mlq-broker --db "$MLQ_DB" --bind "$MLQ_BROKER" --datasets-dir "$store" >>"$tmp/broker.log" 2>&1 &
    broker_pid=$!
    for _ in $(seq 100); do
        mlq dataset ls >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    fail "the broker did not answer"
}
broker_kill() {
    kill -9 "$broker_pid"
    wait "$broker_pid" 2>/dev/null || true
    broker_pid=""
}
json_field() { /usr/bin/python3 -c "import json,sys; print(json.load(sys.stdin)[sys.argv[1]])" "$1"; }
# spec_dataset RUN KEY: the stored spec's dataset.KEY of RUN.
spec_dataset() {
    mlq show "$1" --json |
        /usr/bin/python3 -c "import json,sys; print(json.load(sys.stdin)['spec']['dataset'].get(sys.argv[1]))" "$2"
}

fm=/usr/share/datasets/fashion-mnist
idx() { # idx LIMIT OUT.h5: Fashion-MNIST's training set, its first LIMIT rows
    mlq dataset import-idx "$fm/train-images-idx3-ubyte.gz" "$fm/train-labels-idx1-ubyte.gz" \
        --limit "$1" --output "$2" >/dev/null
}
idx 2000 "$tmp/fm-small.h5"
mlqt_classes 3 300 3 "$tmp/classes.h5"
broker_up

# ---- push, push again ----
run mlq dataset push "$tmp/fm-small.h5"
[ $rc = 0 ] || fail "push: exit $rc: $(cat "$tmp/err")"
sha=$(sha256sum "$tmp/fm-small.h5" | cut -c1-64)
size=$(stat -c %s "$tmp/fm-small.h5")
grep -q "pushed fm-small: sha256 $sha" "$tmp/out" || fail "push said: $(cat "$tmp/out")"
[ -f "$store/objects/$sha" ] && [ -f "$store/objects/$sha.xxh128" ] || fail "no object in $store"
cmp -s "$store/objects/$sha" "$tmp/fm-small.h5" || fail "the object differs from the file"
[ "$(stat -c %s "$store/objects/$sha.xxh128")" = $((16 * ((size + 1048575) / 1048576))) ] ||
    fail "the chunk index is not 16 bytes (one XXH3-128 sum) a chunk"
run mlq dataset push "$tmp/fm-small.h5" --json
[ $rc = 0 ] || fail "push again: exit $rc"
[ "$(json_field sent <"$tmp/out")" = 0 ] && [ "$(json_field have <"$tmp/out")" = True ] ||
    fail "a second push sent bytes: $(cat "$tmp/out")"
run mlq dataset ls
grep -q "^fm-small  *${sha:0:16}" "$tmp/out" || fail "ls: $(cat "$tmp/out")"
# Names of up to 128 bytes, as a spec may give them.
long=$(printf 'n%.0s' $(seq 128))
run mlq dataset push "$tmp/fm-small.h5" --name "$long"
[ $rc = 0 ] || fail "a 128-byte name: exit $rc: $(cat "$tmp/err")"
mlq dataset rm "$long" >/dev/null || fail "rm of the 128-byte name"
run mlq dataset push "$tmp/fm-small.h5" --name "n$long"
[ $rc != 0 ] || fail "a 129-byte name was taken"

# ---- a name held by other bytes ----
run mlq dataset push "$tmp/classes.h5" --name fm-small
[ $rc = 1 ] || fail "a taken name: exit $rc"
grep -q "taken by other bytes.*--replace" "$tmp/err" || fail "taken name said: $(cat "$tmp/err")"
csha=$(sha256sum "$tmp/classes.h5" | cut -c1-64)
run mlq dataset push "$tmp/classes.h5" --name fm-small --replace
[ $rc = 0 ] || fail "--replace: exit $rc: $(cat "$tmp/err")"
mlq dataset ls --json | grep -q "\"sha256\":\"$csha\"" || fail "--replace did not move the name"
mlq dataset push "$tmp/fm-small.h5" --name fm >/dev/null || fail "push as fm"

# ---- not a dataset ----
head -c 100000 /dev/urandom >"$tmp/noise.h5"
run mlq dataset push "$tmp/noise.h5"
[ $rc != 0 ] && grep -q "not an HDF5 file" "$tmp/err" || fail "noise: exit $rc: $(cat "$tmp/err")"
[ -z "$(ls "$store/uploads")" ] || fail "a refused file left an upload"

# ---- get ----
mlq dataset get fm --output "$tmp/got.h5" >/dev/null || fail "get fm"
cmp "$tmp/got.h5" "$tmp/fm-small.h5" || fail "get fm: other bytes"
mlq dataset get "$csha" --output "$tmp/got2.h5" >/dev/null || fail "get by hash"
cmp "$tmp/got2.h5" "$tmp/classes.h5" || fail "get by hash: other bytes"
run mlq dataset get nothing --output "$tmp/x.h5"
[ $rc = 5 ] && [ ! -e "$tmp/x.h5" ] || fail "get of no such name: exit $rc"

# ---- submit and rm ----
echo '{"dataset": {"name": "nothing"}, "model": {"layers": [784, 10]}, "epochs": 1}' >"$tmp/s.json"
run mlq submit "$tmp/s.json"
[ $rc = 2 ] && grep -q "dataset.name 'nothing': no dataset of that name" "$tmp/err" ||
    fail "submit of no such dataset: exit $rc: $(cat "$tmp/err")"
echo '{"dataset": {"name": "fm"}, "model": {"layers": [784, 10]}, "epochs": 1}' >"$tmp/s.json"
job=$(mlq submit "$tmp/s.json") || fail "submit of fm"
[ "$(spec_dataset "$job" sha256)" = "$sha" ] && [ "$(spec_dataset "$job" name)" = fm ] ||
    fail "the stored spec lacks the name's hash: $(mlq show "$job" --json)"
mlq show "$job" | grep -q "dataset    sha256 $sha (fm), not read yet" || fail "show: $(mlq show "$job")"
# Another name of the same bytes goes while the job waits: the job holds the bytes.
mlq dataset push "$tmp/fm-small.h5" --name fm-copy >/dev/null || fail "push as fm-copy"
mlq dataset rm fm-copy >/dev/null || fail "rm of a second name of bytes in use"
[ -f "$store/objects/$sha" ] || fail "rm of a second name took the object"
run mlq dataset rm fm
[ $rc = 1 ] && grep -q "needed by 1 queued or running job ($job)" "$tmp/err" ||
    fail "rm of a dataset in use: exit $rc: $(cat "$tmp/err")"
mlq cancel "$job" >/dev/null
run mlq dataset rm fm
[ $rc = 0 ] || fail "rm: exit $rc: $(cat "$tmp/err")"
mlq dataset ls | grep -q "^fm " && fail "fm still listed"
for _ in $(seq 50); do [ -e "$store/objects/$sha" ] || break; sleep 0.1; done
[ ! -e "$store/objects/$sha" ] || fail "the object of a removed dataset stayed"

# ---- submit --push ----
run mlq submit --dataset "$tmp/classes.h5" --layers 4,3 --epochs 1 --push
[ $rc = 0 ] || fail "submit --push: exit $rc: $(cat "$tmp/err")"
pjob=$(cat "$tmp/out")
[ "$(spec_dataset "$pjob" sha256)" = "$csha" ] && [ "$(spec_dataset "$pjob" name)" = classes ] &&
    [ "$(spec_dataset "$pjob" path)" = None ] || fail "submit --push: the spec: $(mlq show "$pjob" --json)"

# ---- a push whose client is killed, resumed ----
resumed=""
for limit in 60000 59999 59998 59997; do
    idx "$limit" "$tmp/big.h5"
    bsha=$(sha256sum "$tmp/big.h5" | cut -c1-64)
    bsize=$(stat -c %s "$tmp/big.h5")
    mlq dataset push "$tmp/big.h5" >/dev/null 2>&1 &
    pid=$!
    part=$store/uploads/$bsha.part
    for _ in $(seq 2000); do
        [ -s "$part" ] && break
        kill -0 $pid 2>/dev/null || break
        sleep 0.005
    done
    kill -9 $pid 2>/dev/null || true
    wait $pid 2>/dev/null || true
    [ -s "$part" ] && [ "$(stat -c %s "$part")" -lt "$bsize" ] || continue
    run mlq dataset push "$tmp/big.h5" --json
    [ $rc = 0 ] || fail "the resumed push: exit $rc: $(cat "$tmp/err")"
    at=$(json_field resumed_at <"$tmp/out")
    [ "$at" -gt 0 ] && [ "$(json_field sent <"$tmp/out")" = $((bsize - at)) ] ||
        fail "the push did not resume: $(cat "$tmp/out")"
    cmp -s "$store/objects/$bsha" "$tmp/big.h5" || fail "the resumed push stored other bytes"
    resumed=yes
    break
done
[ -n "$resumed" ] || fail "no push was caught mid-transfer in four tries"

# ---- the broker killed mid-push and started again: the same push goes on ----
# (a Fashion-MNIST file with 40 MB of noise after it, which HDF5 ignores)
{ cat "$tmp/big.h5"; head -c 40000000 /dev/urandom; } >"$tmp/padded.h5"
psha=$(sha256sum "$tmp/padded.h5" | cut -c1-64)
mlq dataset push "$tmp/padded.h5" --json >"$tmp/padded.out" 2>"$tmp/padded.err" &
pid=$!
for _ in $(seq 2000); do
    [ -s "$store/uploads/$psha.part" ] && break
    kill -0 $pid 2>/dev/null || break
    sleep 0.005
done
broker_kill
sleep 0.5
broker_up
set +e
wait $pid
rc=$?
set -e
[ $rc = 0 ] || fail "the push across a broker restart: exit $rc: $(cat "$tmp/padded.err")"
cmp -s "$store/objects/$psha" "$tmp/padded.h5" || fail "the push across a restart: other bytes"

# ---- a push whose broker died: its .part resumed after a restart ----
idx 30000 "$tmp/half.h5"
hsha=$(sha256sum "$tmp/half.h5" | cut -c1-64)
hsize=$(stat -c %s "$tmp/half.h5")
broker_kill
# What a broker killed mid-push leaves: five whole chunks and a torn sixth.
head -c $((5 * 1048576 + 1000)) "$tmp/half.h5" >"$store/uploads/$hsha.part"
broker_up
run mlq dataset push "$tmp/half.h5" --json
[ $rc = 0 ] || fail "push after a broker restart: exit $rc: $(cat "$tmp/err")"
[ "$(json_field resumed_at <"$tmp/out")" = $((5 * 1048576)) ] &&
    [ "$(json_field sent <"$tmp/out")" = $((hsize - 5 * 1048576)) ] ||
    fail "not resumed at the fifth chunk: $(cat "$tmp/out")"
mlq dataset get half --output "$tmp/half-got.h5" >/dev/null && cmp "$tmp/half-got.h5" "$tmp/half.h5" ||
    fail "the resumed dataset is not the file"

# ---- a .part of other bytes: the hash fails, nothing is stored, the next push works ----
idx 20000 "$tmp/third.h5"
tsha=$(sha256sum "$tmp/third.h5" | cut -c1-64)
broker_kill
head -c "$(stat -c %s "$tmp/third.h5")" /dev/zero >"$store/uploads/$tsha.part"
broker_up
run mlq dataset push "$tmp/third.h5"
[ $rc = 1 ] && grep -q "hash to .*not $tsha: nothing was stored" "$tmp/err" ||
    fail "a part of other bytes: exit $rc: $(cat "$tmp/err")"
[ ! -e "$store/objects/$tsha" ] && [ ! -e "$store/uploads/$tsha.part" ] ||
    fail "a failed hash left files"
mlq dataset ls | grep -q "^third " && fail "a failed push is listed"
mlq dataset push "$tmp/third.h5" >/dev/null || fail "the push after a failed hash"
cmp -s "$store/objects/$tsha" "$tmp/third.h5" || fail "the push after a failed hash: other bytes"

# ---- pushes abandoned for good: their .part expires after 7 days ----
broker_kill
old=$(echo old | sha256sum | cut -c1-64) young=$(echo young | sha256sum | cut -c1-64)
head -c 3000000 /dev/urandom >"$store/uploads/$old.part"
head -c 3000000 /dev/urandom >"$store/uploads/$young.part"
touch -d "8 days ago" "$store/uploads/$old.part"
touch -d "6 days ago" "$store/uploads/$young.part"
broker_up
for _ in $(seq 50); do
    [ -e "$store/uploads/$old.part" ] || break
    sleep 0.1
done
[ ! -e "$store/uploads/$old.part" ] || fail "a .part 8 days old was kept"
[ -e "$store/uploads/$young.part" ] || fail "a .part 6 days old was removed"
grep -q "dataset ${old:0:12}: a push not resumed for 8 days: its partial upload (3000000 bytes) was removed" \
    "$tmp/broker.log" || fail "the expiry is not logged: $(tail -n 3 "$tmp/broker.log")"

grep -q " error: " "$tmp/broker.log" && fail "the broker logged errors: $(grep " error: " "$tmp/broker.log")"
echo "dataset_push: ok"
