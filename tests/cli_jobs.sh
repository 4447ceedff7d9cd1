#!/usr/bin/env bash
# The job commands as a new user meets them (issue 14), against a real broker
# and trainer that mlq up starts:
# - eval, predict and submit --wait on a job that fails say the job's stored
#   error and exit 3.
# - mlq submit FILE is mlq submit --spec FILE; both, or neither (and no spec
#   flags), is a usage error that says so.
# - mlq cancel ID... answers each id on its own line, exits non-zero saying
#   which failed; --json of several is an array, of one the object as before.
# - mlq wait of a queued job says its place in the queue (STATUS queue_ahead)
#   each time it changes.
# - Ctrl-C in mlq wait ends the wait (exit 130), not the job, and says how to
#   follow it again.
# usage: cli_jobs.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1
. "$(dirname "$0")/lib.sh"
mlqt_init cli_jobs "$build"
# Runs a command, its stdout to $tmp/out, stderr to $tmp/err, exit status to $rc.
run() {
    set +e
    "$@" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    set -e
}

# Three classes in 4 dimensions, and a dataset of 2 inputs per row that no
# model of 4 inputs can read.
mlqt_classes 3 600 3 "$tmp/data.h5"
awk 'BEGIN { print "a,b,label"; for (i = 0; i < 30; i++) print i % 2 "," i % 3 "," i % 2 }' \
    >"$tmp/narrow.csv"
mlq dataset import-csv "$tmp/narrow.csv" --header --label-column label --output "$tmp/narrow.h5" \
    >/dev/null
mlqt_up 1

train=(--dataset "$tmp/data.h5" --layers 4,16,3 --epochs 2 --batch-size 32)
mlq submit "${train[@]}" --name base --wait >"$tmp/base.out" || fail "the first run: exit $?"
run1=$(head -n 1 "$tmp/base.out")
[ "$run1" = 1 ] || fail "submit --wait printed '$run1'"

# ---- a failure's reason, with --wait ----
reason="2 inputs per row"
run mlq eval "$run1" --dataset "$tmp/narrow.h5" --wait
[ $rc = 3 ] || fail "eval --wait of a failing job: exit $rc, want 3"
grep -q "^mlq: job [0-9]* failed: .*$reason" "$tmp/err" || fail "eval --wait: no reason: $(cat "$tmp/err")"
run mlq predict "$run1" --input "$tmp/narrow.h5" --output "$tmp/p.h5" --wait
[ $rc = 3 ] || fail "predict --wait of a failing job: exit $rc, want 3"
grep -q "^mlq: job [0-9]* failed: .*$reason" "$tmp/err" ||
    fail "predict --wait: no reason: $(cat "$tmp/err")"
run mlq predict "$run1" --input "$tmp/narrow.h5" --output "$tmp/p.h5" --wait --json
[ $rc = 3 ] && grep -q "\"error\": *\"[^\"]*$reason" "$tmp/out" ||
    fail "predict --wait --json: exit $rc, $(cat "$tmp/out")"
run mlq submit --dataset "$tmp/narrow.h5" --layers 4,16,3 --epochs 1 --wait
[ $rc = 3 ] || fail "submit --wait of a failing job: exit $rc, want 3"
grep -q "^job [0-9]* failed: .*$reason" "$tmp/out" || fail "submit --wait: no reason: $(cat "$tmp/out")"

# ---- mlq submit FILE: the spec as the operand, as --spec FILE ----
cat >"$tmp/job.json" <<EOF
{"kind": "train", "name": "from-file", "dataset": "$tmp/data.h5",
 "model": {"layers": [4, 8, 3]}, "epochs": 1, "batch_size": 32}
EOF
run mlq submit "$tmp/job.json" --name positional --wait
[ $rc = 0 ] || fail "submit FILE: exit $rc, $(cat "$tmp/err")"
pos=$(head -n 1 "$tmp/out")
mlq show "$pos" --json | grep -q '"name": "positional"' || fail "submit FILE --name: not the job's name"
run mlq submit --spec "$tmp/job.json" "$tmp/job.json"
[ $rc = 2 ] && grep -q "the spec twice" "$tmp/err" || fail "submit --spec F F: exit $rc, $(cat "$tmp/err")"
run mlq submit "$tmp/job.json" "$tmp/job.json"
[ $rc = 2 ] && grep -q "one spec file" "$tmp/err" || fail "submit F F: exit $rc, $(cat "$tmp/err")"
run mlq submit
[ $rc = 2 ] && grep -q "no job: give a spec file" "$tmp/err" || fail "submit alone: exit $rc, $(cat "$tmp/err")"
[ ! -s "$tmp/out" ] || fail "a refused submit printed: $(cat "$tmp/out")"

# ---- a long job on the one trainer, and jobs queued behind it ----
long=$(mlq submit "${train[@]}" --epochs 100000 --batch-size 4 --name long)
for _ in $(seq 100); do
    mlq show "$long" --json | grep -q '"state": "running"' && break
    sleep 0.1
done
mlq show "$long" --json | grep -q '"state": "running"' || fail "the long job does not run"
q1=$(mlq submit "${train[@]}" --name q1)
q2=$(mlq submit "${train[@]}" --name q2)

# ---- mlq cancel ID...: each answered on its own line ----
run mlq cancel "$q1" "$q2" 9999
[ $rc = 5 ] || fail "cancel of two jobs and no job: exit $rc, want 5"
[ "$(cat "$tmp/out")" = "job $q1 cancelled
job $q2 cancelled" ] || fail "cancel ID ID ID: $(cat "$tmp/out")"
grep -q "^mlq: job 9999: no such job" "$tmp/err" && grep -q "1 of 3 not cancelled: job 9999$" "$tmp/err" ||
    fail "cancel ID ID ID: $(cat "$tmp/err")"
q3=$(mlq submit "${train[@]}" --name q3)
run mlq cancel --json "$q3" "$q1"
[ $rc = 0 ] || fail "cancel --json of two: exit $rc, $(cat "$tmp/err")"
python3 -c '
import json, sys
a = json.load(open(sys.argv[1]))
assert isinstance(a, list) and [o["id"] for o in a] == [int(sys.argv[2]), int(sys.argv[3])], a
assert [o["state"] for o in a] == ["cancelled", "cancelled"], a
' "$tmp/out" "$q3" "$q1" || fail "cancel --json ID ID: $(cat "$tmp/out")"
run mlq cancel --json 9998 "$q3"
[ $rc = 5 ] && grep -q '"code": *"not_found"' "$tmp/out" || fail "cancel --json of a missing job: exit $rc, $(cat "$tmp/out")"
# One id: as it always was, one object.
run mlq cancel --json "$q2"
[ $rc = 0 ] && grep -q "^{\"id\": *$q2, *\"state\": *\"cancelled\"}$" "$tmp/out" ||
    fail "cancel --json ID: exit $rc, $(cat "$tmp/out")"
run mlq cancel 9999
[ $rc = 5 ] && [ "$(cat "$tmp/err")" = "mlq: job 9999: no such job" ] || fail "cancel of no job: exit $rc, $(cat "$tmp/err")"
run mlq cancel "$q1" x
[ $rc = 2 ] && grep -q "'x' is not a job id" "$tmp/err" && [ ! -s "$tmp/out" ] ||
    fail "cancel ID x: exit $rc, $(cat "$tmp/out" "$tmp/err")"

# ---- mlq wait of a queued job: its place in the queue ----
# Waits until file $1 has a line $2 (a fixed string), at most 10 s.
await_line() {
    for _ in $(seq 100); do
        grep -qxF "$2" "$1" && return 0
        sleep 0.1
    done
    fail "no line '$2' in $1: $(cat "$1")"
}
a=$(mlq submit "${train[@]}" --name a)
b=$(mlq submit "${train[@]}" --name b)
c=$(mlq submit "${train[@]}" --name c --priority 5)
mlq wait "$b" >"$tmp/wait_b" 2>&1 &
wait_pid=$!
await_line "$tmp/wait_b" "job $b queued, 2 jobs ahead"
mlq cancel "$c" >/dev/null
await_line "$tmp/wait_b" "job $b queued, 1 job ahead"
mlq cancel "$a" >/dev/null
await_line "$tmp/wait_b" "job $b queued, no job ahead"
mlq cancel "$b" >/dev/null
set +e
wait "$wait_pid"
rc=$?
set -e
[ $rc = 4 ] && [ "$(tail -n 1 "$tmp/wait_b")" = "job $b cancelled: cancelled before it started" ] ||
    fail "wait of a queued job cancelled: exit $rc, $(cat "$tmp/wait_b")"
[ "$(grep -c "queued" "$tmp/wait_b")" = 3 ] || fail "a place said more than once: $(cat "$tmp/wait_b")"

# ---- Ctrl-C in mlq wait: the wait ends, the job goes on, and it says so ----
mlq wait "$long" >"$tmp/wait_long" 2>&1 &
wait_pid=$!
for _ in $(seq 100); do
    grep -q "^job $long epoch" "$tmp/wait_long" && break
    sleep 0.1
done
grep -q "^job $long epoch" "$tmp/wait_long" || fail "wait of the long job printed no epoch: $(cat "$tmp/wait_long")"
kill -INT "$wait_pid"
set +e
wait "$wait_pid"
rc=$?
set -e
[ $rc = 130 ] || fail "wait after Ctrl-C: exit $rc, want 130: $(cat "$tmp/wait_long")"
grep -q "^mlq: stopped waiting; job $long goes on (running)\. Follow it again with mlq wait $long" \
    "$tmp/wait_long" || fail "wait after Ctrl-C said: $(cat "$tmp/wait_long")"
mlq show "$long" --json | grep -q '"state": "running"' || fail "Ctrl-C in wait stopped the job"

mlq cancel "$long" >/dev/null
echo "cli_jobs: ok"
