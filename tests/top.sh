#!/usr/bin/env bash
# mlq top under tmux: a real broker and two trainers busy with two long jobs
# and a third queued; mlq top runs in a tmux pane of 120x40, and the pane as
# captured (capture-pane) must show the queue's counts, both trainers busy
# with their jobs, epochs and samples/s, the running jobs' progress bars and
# the queued job; q must end it with exit 0. mlq top --once prints the same
# frame without a terminal, and says exit 6 when no broker answers.
# usage: top.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1
command -v tmux >/dev/null || { echo "top: SKIP: no tmux (Debian: apt-get install tmux)"; exit 77; }
. "$(dirname "$0")/lib.sh"
mlqt_cleanup_extra() { tmux -S "${tmux_sock:-/nonexistent}" kill-server 2>/dev/null; }
mlqt_init top "$build"
tmux_sock=$tmp/tmux.sock
# The pane as last captured, besides the up log, when a check fails.
fail() {
    echo "top: FAIL: $*" >&2
    [ -f "$tmp/pane" ] && { echo "--- the pane:" >&2; cat "$tmp/pane" >&2; }
    [ -f "$tmp/up.log" ] && tail -n 20 "$tmp/up.log" >&2
    exit 1
}

mlqt_classes 5 20000 1 "$tmp/data.h5"
mlqt_up 2
# Two trainers share the cores (mlq up gives each its part).
share=$(($(nproc) / 2)); [ "$share" -ge 1 ] || share=1
for n in long-a long-b waiting; do
    mlq submit --dataset "$tmp/data.h5" --validation-split 0.1 --layers 4,128,128,3 \
        --optimizer adam --lr 0.001 --epochs 400 --batch-size 64 --name "$n" >/dev/null
done
trainers=$(mlq workers --json | grep -o '"name": *"[^"]*"' | sed 's/.*"\([^"]*\)"$/\1/')

# One frame for a pipe.
mlq top --once >"$tmp/once"
grep -q "^queue: [0-9]* queued, [0-9]* running" "$tmp/once" || fail "top --once: $(cat "$tmp/once")"

# The pane's shell records mlq top's exit status (tmux's pane_dead_status
# is not always set by the time a dead pane is seen).
tmux -S "$tmux_sock" -f /dev/null new-session -d -s top -x 120 -y 40 \
    "env MLQ_BROKER='$MLQ_BROKER' MLQ_CONFIG='$MLQ_CONFIG' TERM=xterm $build/cli/mlq top; echo \$? >'$tmp/top.rc'; sleep 30"
ok=""
for _ in $(seq 60); do
    sleep 0.5
    tmux -S "$tmux_sock" capture-pane -p -t top >"$tmp/pane"
    # both long jobs past their first epoch, with a bar each
    if [ "$(grep -cE '^job [12] .*\[#+-*\] +[0-9]+% [1-9][0-9]*/400' "$tmp/pane")" = 2 ]; then
        ok=1
        break
    fi
done
[ -n "$ok" ] || fail "no progress bars for jobs 1 and 2"
# Each trainer on its share of the cores ("OpenBLAS kernel K, N threads" as it starts).
[ "$(grep -cE "OpenBLAS kernel [^,]*, $share threads?$" "$tmp/up.log")" = 2 ] ||
    fail "trainers of mlq up --trainers 2 do not share the $(nproc) cores: $(grep "OpenBLAS kernel" "$tmp/up.log")"
grep -q "^mlq top  $MLQ_BROKER" "$tmp/pane" || fail "no title line"
grep -q "^queue: 1 queued, 2 running, 0 succeeded" "$tmp/pane" || fail "queue counts"
for t in $trainers; do
    grep -qE "^$t +busy +[12] +[0-9]+/400 +[0-9.]+[kM]? +(val_loss|train_loss) [0-9.]+" "$tmp/pane" ||
        fail "trainer $t: no job, epoch, samples/s and metric"
done
grep -qE "^job 3 +train +priority 0 .* waiting" "$tmp/pane" || fail "queued job 3"
# It redraws: the epoch moves on.
e1=$(grep -oE '^job 1 .* ([0-9]+)/400' "$tmp/pane" | grep -oE '[0-9]+/400' | cut -d/ -f1)
sleep 2.5
tmux -S "$tmux_sock" capture-pane -p -t top >"$tmp/pane"
e2=$(grep -oE '^job 1 .* ([0-9]+)/400' "$tmp/pane" | grep -oE '[0-9]+/400' | cut -d/ -f1)
[ "${e2:-0}" -gt "${e1:-0}" ] || fail "not redrawn: job 1 at epoch $e1, then $e2"
tmux -S "$tmux_sock" send-keys -t top q
for _ in $(seq 50); do
    [ -s "$tmp/top.rc" ] && break
    sleep 0.1
done
[ "$(cat "$tmp/top.rc" 2>/dev/null)" = 0 ] ||
    fail "q did not end mlq top with exit 0 (exit status: $(cat "$tmp/top.rc" 2>/dev/null))"
tmux -S "$tmux_sock" capture-pane -p -t top >"$tmp/pane"
# The terminal as it was: the alternate screen left, the frame gone.
! grep -q "^queue: " "$tmp/pane" || fail "the frame stayed on the screen after q"

# mlq logs --follow of a running job, then Ctrl-C: it says the job goes on.
mlq logs 1 --follow >"$tmp/follow" 2>"$tmp/follow.err" &
follow_pid=$!
sleep 2
kill -INT "$follow_pid"
set +e
wait "$follow_pid"
rc=$?
set -e
[ $rc = 0 ] || fail "logs --follow interrupted: exit $rc"
grep -qE "  epoch  [0-9]+/400  .*train_loss [0-9.e-]+" "$tmp/follow" || fail "logs --follow: no epochs: $(cat "$tmp/follow")"
grep -q "job 1 goes on (mlq logs 1 --follow" "$tmp/follow.err" || fail "logs --follow: $(cat "$tmp/follow.err")"
mlq logs 1 --follow >"$tmp/follow" 2>&1 &
follow_pid=$!
for id in 1 2 3; do mlq cancel "$id" >/dev/null 2>&1 || true; done
set +e
wait "$follow_pid"
rc=$?
set -e
[ $rc = 4 ] && [ "$(tail -n 1 "$tmp/follow")" = "job 1 cancelled" ] ||
    fail "logs --follow of a job cancelled: exit $rc, $(tail -n 2 "$tmp/follow")"
kill -INT "$up_pid"
wait "$up_pid" 2>/dev/null || true
up_pid=""
set +e
MLQ_TIMEOUT_MS=500 mlq top --once >"$tmp/down" 2>&1
rc=$?
set -e
[ $rc = 6 ] && grep -q "cannot reach the broker" "$tmp/down" || fail "top without a broker: exit $rc"
echo "top: ok"
