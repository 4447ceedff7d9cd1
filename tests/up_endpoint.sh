#!/usr/bin/env bash
# mlq up's endpoint: while `mlq up --bind ipc://... --db FILE` runs, the other
# commands of the same user (their own home here) find its broker and its
# database with no flag and no variable; the environment and flags still win;
# once it stops, or when its file outlives it, the defaults are back.
# usage: up_endpoint.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1
. "$(dirname "$0")/lib.sh"
mlqt_init up_endpoint "$build"
# Nothing but mlq up's file names the broker and the database.
unset MLQ_BROKER MLQ_DB XDG_DATA_HOME
state=$XDG_CONFIG_HOME/mlq/up.json

awk 'BEGIN { srand(5); print "a,b,label";
             for (i = 0; i < 200; i++) { c = i % 2; print rand() + 2 * c "," rand() "," c } }' \
    >"$tmp/data.csv"
mlq dataset import-csv "$tmp/data.csv" --header --label-column label --output "$tmp/data.h5" >/dev/null

# Relative paths, from its own directory: up.json has them absolute for the others.
(cd "$tmp" && exec mlq up --trainers 1 --threads 1 --bind ipc://b.sock --db elsewhere.db) \
    >"$tmp/up.log" 2>&1 &
up_pid=$!
for _ in $(seq 100); do
    [ -f "$state" ] && mlq workers 2>/dev/null | grep -q idle && break
    sleep 0.1
done
[ -f "$state" ] || fail "no $state while mlq up runs"
grep -q "\"endpoint\": \"ipc://$tmp/b.sock\"" "$state" || fail "state: $(cat "$state")"
grep -q "\"db\": \"$tmp/elsewhere.db\"" "$state" || fail "state: $(cat "$state")"
[ "$(stat -c %a "$state")" = 600 ] || fail "state file mode $(stat -c %a "$state")"
mlq workers | grep -q idle || fail "mlq workers did not find the broker"

# No --broker, no --db, no MLQ_*: the broker and database of mlq up.
id=$(mlq submit --dataset "$tmp/data.h5" --layers 2,8,2 --epochs 2 --batch-size 20)
mlq wait "$id" >/dev/null || fail "wait: exit $?"
[ -f "$tmp/elsewhere.db" ] || fail "mlq up's database was not made"
mlq runs --csv | grep -q "^$id,train,succeeded," || fail "mlq runs did not read mlq up's database"
[ "$(mlq config broker.endpoint)" = "ipc://$tmp/b.sock" ] || fail "config: $(mlq config broker.endpoint)"
[ "$(mlq config db.path)" = "$tmp/elsewhere.db" ] || fail "config db.path: $(mlq config db.path)"
mlq config --json | tr -d ' \n' | grep -q '"broker.endpoint":{"value":"ipc://[^"]*","source":"up"' ||
    fail "config --json: source up: $(mlq config --json | head -n 12)"
mlq config | grep -q "^broker.endpoint .*# up $state (mlq up, pid $up_pid)" ||
    fail "config: $(mlq config | head -n 3)"

# The environment, the config file and flags win over it.
rc=0
MLQ_BROKER=ipc://$tmp/nobody.sock MLQ_TIMEOUT_MS=300 mlq queue >/dev/null 2>"$tmp/err" || rc=$?
[ $rc = 6 ] && grep -q "nobody.sock" "$tmp/err" || fail "MLQ_BROKER did not win: exit $rc"
echo "db.path = $tmp/file.db" >"$tmp/file.conf"
[ "$(MLQ_CONFIG=$tmp/file.conf mlq config db.path)" = "$tmp/file.db" ] || fail "the file did not win"
rc=0
mlq runs --db "$tmp/flag.db" >/dev/null 2>&1 || rc=$?
[ $rc = 6 ] || fail "--db did not win: exit $rc"
rc=0
MLQ_DB=$tmp/env.db mlq runs >/dev/null 2>&1 || rc=$?
[ $rc = 6 ] || fail "MLQ_DB did not win: exit $rc"

# Python's module reads it too (where pyzmq is installed).
if /usr/bin/python3 -c 'import zmq' 2>/dev/null; then
    got=$(PYTHONPATH=$2/python /usr/bin/python3 -c \
        'import mlq; c = mlq.Client(); print(c.endpoint, mlq.db_path(), len(c.queue()["jobs"]))')
    [ "$got" = "ipc://$tmp/b.sock $tmp/elsewhere.db 0" ] || fail "python: $got"
fi

# Stopped: the file goes, the defaults are back. A copy left behind by an
# mlq up that is gone changes nothing.
cp "$state" "$tmp/left.json"
kill -INT "$up_pid"
wait "$up_pid" || fail "mlq up: exit $?"
up_pid=""
[ ! -e "$state" ] || fail "$state outlived mlq up"
[ "$(mlq config broker.endpoint)" = "tcp://127.0.0.1:5555" ] || fail "after: $(mlq config broker.endpoint)"
cp "$tmp/left.json" "$state"
[ "$(mlq config broker.endpoint)" = "tcp://127.0.0.1:5555" ] || fail "a stale file was used"
[ "$(mlq config db.path)" = "" ] || fail "a stale file's db was used"
echo "up_endpoint: ok"
