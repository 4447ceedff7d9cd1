#!/usr/bin/env bash
# The README's five-minute tour, run as written so that it stays true: the
# shell block of its "A five-minute tour" section, top to bottom, with set -e
# (every command must succeed), in a fresh home and a scratch directory laid
# out as a fresh clone (examples/ and build/ linked, nothing else), against
# the real broker and trainers its own `mlq up` starts, within a time limit.
# Nothing of the tour is changed: the one thing set around it is where its
# broker is (broker.bind and broker.endpoint in a config file of its own, an
# ipc socket, so that port 5555 need not be free and no other broker on this
# host can answer it).
# Then: the files it says it writes exist, and no job failed.
# usage: readme_tour.sh BUILD_DIR SOURCE_DIR [SECONDS (default 200)]
# (MLQ_TOUR_LOG=FILE keeps the tour's output, each command with its line and time.)
set -euo pipefail
build=$(cd "$1" && pwd)
src=$(cd "$2" && pwd)
limit=${3:-200}
keep_log=${MLQ_TOUR_LOG:-}
idx=/usr/share/datasets/fashion-mnist
[ -f "$idx/train-images-idx3-ubyte.gz" ] || { echo "readme_tour: SKIP: no Fashion-MNIST in $idx"; exit 77; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mlq-tour-XXXXXX")
cleanup() {
    [ -z "$keep_log" ] || cp "$tmp/tour.log" "$keep_log" 2>/dev/null || true
    # The tour leaves its mlq up running (a user would Ctrl-C it): the
    # script's EXIT trap below stops it; this is for a timeout.
    if [ -f "$tmp/up.pid" ]; then kill -INT "$(cat "$tmp/up.pid")" 2>/dev/null || true; fi
    for _ in $(seq 100); do pgrep -f "$tmp/broker.sock" >/dev/null || break; sleep 0.1; done
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() {
    echo "readme_tour: FAIL: $*" >&2
    [ -f "$tmp/tour.log" ] && tail -n 40 "$tmp/tour.log" >&2
    exit 1
}

# The shell block of the tour section.
awk '/^## A five-minute tour/ { on = 1; next }
     on && /^## / { exit }
     on && /^```sh$/ { block = 1; next }
     block && /^```$/ { block = 0; next }
     block' "$src/README.md" >"$tmp/tour.sh"
[ "$(grep -c '^mlq ' "$tmp/tour.sh")" -ge 20 ] || fail "no tour found in README.md"

clone=$tmp/clone
mkdir -p "$clone" "$tmp/home"
ln -s "$src/examples" "$clone/examples"
ln -s "$build" "$clone/build"
for v in $(env | grep -o '^MLQ_[A-Z_]*'); do unset "$v"; done
unset XDG_DATA_HOME XDG_STATE_HOME XDG_RUNTIME_DIR
export HOME=$tmp/home XDG_CONFIG_HOME=$tmp/home/.config
export MLQ_CONFIG=$tmp/mlq.conf
printf 'broker.bind = ipc://%s/broker.sock\nbroker.endpoint = ipc://%s/broker.sock\n' "$tmp" "$tmp" \
    >"$MLQ_CONFIG"
export COLUMNS=100

{
    echo 'set -euo pipefail'
    echo "PS4='+ tour line \$LINENO (\$SECONDS s): '"
    # What the user's Ctrl-C does at the end: stop mlq up, which stops its trainers and broker.
    echo "trap 'for p in \$(jobs -p); do kill -INT \$p; done; wait' EXIT"
    echo 'set -x'
    sed 's/^mlq up \(.*\)&$/mlq up \1\& echo $! >'"${tmp//\//\\/}"'\/up.pid/' "$tmp/tour.sh"
} >"$tmp/run.sh"
grep -q "up.pid" "$tmp/run.sh" || fail "the tour starts no 'mlq up ... &'"

start=$SECONDS
rc=0
(cd "$clone" && timeout -k 10 "$limit" bash "$tmp/run.sh" </dev/null >"$tmp/tour.log" 2>&1) || rc=$?
took=$((SECONDS - start))
[ $rc = 124 ] && fail "the tour did not finish in $limit s"
[ $rc = 0 ] || fail "the tour stopped with exit $rc"
echo "readme_tour: the tour ran in $took s"

# What it says it writes, and what it left in the database.
for f in data/fashion-mnist-train.h5 data/fashion-mnist-test.h5 predictions.h5 model.h5 answers.h5; do
    [ -s "$clone/$f" ] || fail "no $f"
done
grep -q '<svg' "$clone/report.html" || fail "report.html has no chart"
db=$HOME/.local/share/mlq/mlq.db
[ -f "$db" ] || fail "no database at $db"
failed=$(sqlite3 "$db" "SELECT count(*) FROM jobs WHERE state = 'failed'")
[ "$failed" = 0 ] || fail "$failed jobs failed: $(sqlite3 "$db" "SELECT id, error FROM jobs WHERE state = 'failed'")"
[ ! -e "$XDG_CONFIG_HOME/mlq/up.json" ] || fail "mlq up's up.json outlived it"
echo "readme_tour: ok ($(sqlite3 "$db" "SELECT count(*) FROM jobs") jobs)"
