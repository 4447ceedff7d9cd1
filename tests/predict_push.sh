#!/usr/bin/env bash
# Predict outputs that come back to the client's host (issue 16), with a
# real mlq-broker and mlq-trainer that share no directory with the client:
# - mlq predict --push pushes the input, the trainer sends the output to
#   the broker's dataset store as predict-ID, and mlq writes it to --output
#   here: the same predictions as a predict job writing a file of its own;
# - the run's result names the dataset and its hash, which the bytes have;
#   mlq dataset get fetches it again later;
# - mlq submit --push of a predict spec with a path output brings it back
#   here too (with --wait; without, it says how to get it);
# - a second --push predict under its own spec name replaces nothing else;
# - a trainer whose connection does not hold the job cannot push as it
#   (a forged DATASET_PUT naming the job: forbidden, nothing stored);
# - --output in a directory that does not exist: exit 2 before a job;
# - a spec that pushes the output of a train job: exit 2.
# usage: predict_push.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1
. "$(dirname "$0")/lib.sh"
mlqt_cleanup_extra() {
    [ -n "${trainer_pid:-}" ] && kill -9 "$trainer_pid" 2>/dev/null
    [ -n "${broker_pid:-}" ] && kill -9 "$broker_pid" 2>/dev/null
    true
}
mlqt_init predict_push "$build"
run() {
    set +e
    "$@" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    set -e
}
json_get() { /usr/bin/python3 -c "import json,sys; d=json.load(sys.stdin)
for k in sys.argv[1].split('.'): d=d[k]
print(d)" "$1"; }

# The client's files live here; the trainer runs in a directory of its own
# with its own data root and cache, so it can read nothing of the client's.
mkdir -p "$tmp/client" "$tmp/trainer-host/data"
mlqt_classes 3 600 3 "$tmp/client/train.h5"
mlqt_classes 5 90 3 "$tmp/client/new.h5"
mlq-broker --db "$MLQ_DB" --bind "$MLQ_BROKER" --datasets-dir "$tmp/store" >"$tmp/broker.log" 2>&1 &
broker_pid=$!
(cd "$tmp/trainer-host" && MLQ_DATA_ROOT=$tmp/trainer-host/data exec mlq-trainer \
    --broker "$MLQ_BROKER" --name far --dataset-cache-dir "$tmp/trainer-host/cache" \
    >"$tmp/trainer.log" 2>&1) &
trainer_pid=$!
for _ in $(seq 100); do
    mlq workers 2>/dev/null | grep -q idle && break
    sleep 0.1
done
mlq workers | grep -q idle || fail "no idle trainer: $(tail -5 "$tmp/trainer.log")"

cd "$tmp/client"
run mlq submit --push --dataset train.h5 --layers 4,16,3 --epochs 3 --batch-size 32 --wait
[ $rc = 0 ] || fail "train: exit $rc: $(tail -3 "$tmp/err") $(tail -5 "$tmp/trainer.log")"
train=$(head -1 "$tmp/out")

# ---- predict --push: the output comes back here ----
run mlq predict "$train" --input new.h5 --output preds.h5 --push
[ $rc = 0 ] || fail "predict --push: exit $rc: $(cat "$tmp/err") $(tail -5 "$tmp/trainer.log")"
job=$(head -1 "$tmp/out")
[ -f preds.h5 ] || fail "no preds.h5 here: $(cat "$tmp/out")"
grep -q "output: $tmp/client/preds.h5 (.*verified), also kept at the broker as dataset predict-$job" \
    "$tmp/out" || fail "predict said: $(cat "$tmp/out")"
[ -z "$(ls "$tmp/trainer-host/cache/outputs")" ] || fail "the trainer kept its output file"
mlq show "$job" --json >"$tmp/show.json"
sha=$(json_get result.output_sha256 <"$tmp/show.json")
[ "$(json_get result.output <"$tmp/show.json")" = "predict-$job" ] || fail "result: $(cat "$tmp/show.json")"
[ "$(sha256sum preds.h5 | cut -c1-64)" = "$sha" ] || fail "preds.h5 is not the bytes the run names"
[ "$(json_get result.n <"$tmp/show.json")" = 90 ] || fail "not 90 rows: $(cat "$tmp/show.json")"
mlq dataset ls | grep -q "^predict-$job  *${sha:0:16}" || fail "ls: $(mlq dataset ls)"

# The same predictions as a predict job that reads and writes files on the
# trainer's host (a relative input that is not here is under its data root).
cp new.h5 "$tmp/trainer-host/data/copy.h5"
run sh -c "cd '$tmp' && mlq predict $train --input copy.h5 --output '$tmp/trainer-host/p2.h5' --wait"
[ $rc = 0 ] || fail "path predict: exit $rc: $(cat "$tmp/err")"
/usr/bin/python3 - preds.h5 "$tmp/trainer-host/p2.h5" <<'PY' || fail "the pushed output differs"
import sys, h5py, numpy as np
a, b = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
assert sorted(a.keys()) == sorted(b.keys()), (list(a.keys()), list(b.keys()))
for k in a.keys():
    assert np.array_equal(a[k][()], b[k][()]), k
assert a["predictions"].shape == (90,)
PY

# Fetched again later, by name.
run mlq dataset get "predict-$job" --output again.h5
[ $rc = 0 ] && cmp -s again.h5 preds.h5 || fail "dataset get: exit $rc: $(cat "$tmp/err")"

# ---- mlq submit --push of a predict spec: its path output comes back here too ----
cat >pspec.json <<EOF
{"kind": "predict", "run": $train, "input": {"path": "new.h5"}, "output": "spec-preds.h5"}
EOF
run mlq submit pspec.json --push --wait
[ $rc = 0 ] || fail "submit --push of a predict spec: exit $rc: $(cat "$tmp/err")"
[ -f spec-preds.h5 ] || fail "submit --push: no spec-preds.h5 here: $(cat "$tmp/out" "$tmp/err")"
spec_job=$(head -1 "$tmp/out")
[ "$(mlq show "$spec_job" --json | json_get result.output)" = "predict-$spec_job" ] ||
    fail "submit --push: the trainer wrote the output itself: $(mlq show "$spec_job" --json)"
/usr/bin/python3 - preds.h5 spec-preds.h5 <<'PY' || fail "submit --push: other predictions"
import sys, h5py, numpy as np
a, b = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
assert np.array_equal(a["predictions"][()], b["predictions"][()])
PY
run mlq submit pspec.json --push
nowait=$(head -1 "$tmp/out")
[ $rc = 0 ] && grep -q "output will be the broker's dataset predict-$nowait: mlq dataset get" "$tmp/err" ||
    fail "submit --push without --wait: exit $rc: $(cat "$tmp/err")"
mlq wait --quiet "$nowait" || fail "job $nowait: $(mlq show "$nowait")"
mlq dataset ls | grep -q "^predict-$nowait " || fail "no predict-$nowait: $(mlq dataset ls)"

# ---- a spec that names its output ----
cat >"$tmp/named.json" <<EOF
{"kind": "predict", "run": $train, "input": {"name": "new"}, "output": {"push": true, "name": "scores-1"}}
EOF
mlq dataset push new.h5 >/dev/null
run mlq submit "$tmp/named.json" --wait
[ $rc = 0 ] || fail "named output: exit $rc: $(cat "$tmp/err")"
named=$(head -1 "$tmp/out")
mlq dataset ls | grep -q "^scores-1 " || fail "no scores-1: $(mlq dataset ls)"
[ "$(mlq show "$named" --json | json_get result.output)" = scores-1 ] || fail "named result"

# ---- a forged push for a job the sender does not hold ----
cat >"$tmp/slow.json" <<EOF
{"kind": "train", "dataset": {"name": "train"}, "model": {"layers": [4, 64, 3]}, "epochs": 200, "batch_size": 8}
EOF
run mlq submit "$tmp/slow.json"
slow=$(head -1 "$tmp/out")
for _ in $(seq 100); do
    mlq status "$slow" 2>/dev/null | grep -q running && break
    sleep 0.1
done
/usr/bin/python3 - "$MLQ_BROKER" "$slow" <<'PY' >"$tmp/forged" || fail "forged push: $(cat "$tmp/forged")"
import json, sys, zmq
s = zmq.Context().socket(zmq.DEALER)
s.setsockopt(zmq.RCVTIMEO, 5000)
s.connect(sys.argv[1])
body = {"job": int(sys.argv[2]), "name": "predict-%s" % sys.argv[2], "sha256": "a" * 64, "size": 10}
s.send_multipart([b"MLQ1", b"DATASET_PUT", json.dumps(body).encode()])
f = s.recv_multipart()
print(f[1].decode(), f[2].decode())
assert f[1] == b"ERROR" and json.loads(f[2])["code"] == "forbidden", f
PY
mlq cancel "$slow" >/dev/null
mlq dataset ls | grep -q "^predict-$slow " && fail "a forged push made a dataset"

# ---- bad requests, refused before a job ----
run mlq predict "$train" --input new.h5 --output "$tmp/nowhere/p.h5" --push
[ $rc = 2 ] && grep -q "its directory does not exist" "$tmp/err" ||
    fail "an output dir that does not exist: exit $rc: $(cat "$tmp/err")"
echo '{"kind": "train", "dataset": {"name": "train"}, "output": {"push": true}}' >"$tmp/bad.json"
run mlq submit "$tmp/bad.json"
[ $rc = 2 ] && grep -q "output: only predict jobs" "$tmp/err" ||
    fail "a train job with an output: exit $rc: $(cat "$tmp/err")"
kill -0 "$broker_pid" && kill -0 "$trainer_pid" || fail "a daemon died"
echo "predict_push: ok"
