#!/usr/bin/env bash
# mlq generate through a deployment (issue 15): a character LSTM and a small
# causal Transformer trained on a small text through mlq up (broker and
# trainers), deployed, and their text drawn both ways: as a generate job and
# one INFER per token through the deployment, the same for the same seed,
# temperature and top-k (sampled, top-k, greedy, a prompt longer than the
# window). A language model's infer rows (windows of ids, a tail of -1)
# and their refusals; a deployment that is no language model refused.
# usage: generate_deploy.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1
. "$(dirname "$0")/lib.sh"
# mlq up makes its keys (and mlq finds them) in ~/.config/mlq: the test's home.
mlqt_init generate_deploy "$build"

mlqt_text 12288 "$tmp/text.txt"
mlq dataset import-text "$tmp/text.txt" --context 32 --output "$tmp/text.h5" >/dev/null

# Two trainers: a deployment holds one, the generate jobs run on the other.
mlqt_up 2 --threads 1

cat >"$tmp/lstm.json" <<EOT
{"name": "char-lstm", "dataset": "$tmp/text.h5",
 "model": {"layers": [{"type": "embedding", "vocab": 256, "out": 16},
                      {"type": "lstm", "out": 32},
                      {"type": "dense", "out": 256}]},
 "optimizer": {"name": "adam", "lr": 0.01}, "batch_size": 16, "epochs": 3, "seed": 5}
EOT
cat >"$tmp/gpt.json" <<EOT
{"name": "char-gpt", "dataset": "$tmp/text.h5",
 "model": {"layers": [{"type": "embedding", "vocab": 256, "out": 16},
                      {"type": "positional", "vocab": 32},
                      {"type": "transformer", "heads": 2, "causal": true},
                      {"type": "layernorm"},
                      {"type": "dense", "out": 256}]},
 "optimizer": {"name": "adamw", "lr": 0.003}, "batch_size": 16, "epochs": 1, "seed": 5}
EOT
lstm=$(mlq submit --spec "$tmp/lstm.json")
gpt=$(mlq submit --spec "$tmp/gpt.json")
mlq wait "$lstm" >/dev/null || fail "char-lstm run: exit $?"
mlq wait "$gpt" >/dev/null || fail "char-gpt run: exit $?"

mlq deploy "$lstm" --name chars >/dev/null || fail "deploy: exit $?"
mlq deployments chars --json >"$tmp/dep.json"
grep -q '"steps":32' "$tmp/dep.json" && grep -q '"vocab":256' "$tmp/dep.json" ||
    fail "DEPLOYMENTS: no steps or vocab: $(cat "$tmp/dep.json")"

same() { # RUN ARGS...: the job's text and the deployment's
    local run=$1
    shift
    local job dep
    job=$(mlq generate "$run" "$@") || fail "generate $run $*: exit $?"
    dep=$(mlq generate --deployment chars "$@") || fail "generate --deployment chars $*: exit $?"
    [ "$job" = "$dep" ] || fail "run $run $*: the job says '$job', the deployment '$dep'"
    echo "generate_deploy: run $run $*: '$dep'"
}
long="we like to read books. it is a sunny" # 36 bytes: beyond the window of 32
same "$lstm" --prompt "the " --tokens 40 --temperature 0.8 --top-k 20 --seed 3
same "$lstm" --prompt "a" --tokens 30 --seed 11
same "$lstm" --prompt "she sells" --tokens 12 --temperature 0
same "$lstm" --prompt "$long" --tokens 20 --temperature 1.5 --top-k 5 --seed 2
d3=$(mlq generate --deployment chars --prompt "the " --tokens 40 --temperature 0.8 --top-k 20 --seed 4)
d2=$(mlq generate --deployment chars --prompt "the " --tokens 40 --temperature 0.8 --top-k 20 --seed 3)
[ "$d2" != "$d3" ] || fail "the deployment: seeds 3 and 4 give the same text"

# --json: the job's result keys, and which model answered.
mlq generate --deployment chars --prompt "the " --tokens 8 --seed 3 --json >"$tmp/gen.json"
mlq generate "$lstm" --prompt "the " --tokens 8 --seed 3 --json >"$tmp/job.json"
/usr/bin/python3 - "$tmp/gen.json" "$tmp/job.json" "$lstm" <<'PY' || fail "--json: $(cat "$tmp/gen.json")"
import json, sys
d = json.load(open(sys.argv[1]))
job = json.load(open(sys.argv[2]))["job"]["result"]
for k in ("text", "prompt", "tokens", "temperature", "top_k", "seed", "epoch", "ids"):
    assert d[k] == job[k], (k, d[k], job[k])
assert d["deployment"] == "chars" and d["run"] == int(sys.argv[3]) and d["generation"] == 1, d
PY

# Infer rows of a language model: up to T ids, then -1s; the answer is the
# next token's distribution after the last id.
row() { /usr/bin/python3 -c "
import sys; ids = list(sys.argv[1].encode()); print([float(i) for i in ids] + [-1.0] * (32 - len(ids)))" "$1"; }
next=$(row "she sells" | mlq infer chars | cut -d' ' -f1)
greedy=$(mlq generate --deployment chars --prompt "she sells" --tokens 1 --temperature 0 --json |
    /usr/bin/python3 -c 'import json, sys; print(json.load(sys.stdin)["ids"][0])')
[ "$next" = "$greedy" ] || fail "infer's most likely next token $next, generate's $greedy"
refused() { # WHAT ROW WANT
    local rc=0
    echo "$2" | mlq infer chars >/dev/null 2>"$tmp/err" || rc=$?
    [ $rc = 2 ] && grep -q "$3" "$tmp/err" || fail "$1: exit $rc, $(cat "$tmp/err")"
}
pad() { /usr/bin/python3 -c "import sys; v = eval(sys.argv[1]); print(v + [-1.0] * (32 - len(v)))" "$1"; }
refused "an id beyond the vocabulary" "$(pad '[104.0, 300.0]')" "whole numbers in \[0, 256)"
refused "a fraction" "$(pad '[104.5]')" "whole numbers in \[0, 256)"
refused "an id after the -1s" "$(pad '[104.0, -1.0, 104.0]')" "followed by -1s"
refused "no id" "$(pad '[]')" "holds no token id"
refused "a negative id" "$(pad '[-2.0]')" "whole numbers in \[0, 256)"
row "ok" | mlq infer chars >/dev/null || fail "a good row after the bad ones: exit $?"

# The flags that do not go together.
rc=0
mlq generate "$lstm" --deployment chars --prompt a 2>/dev/null || rc=$?
[ $rc = 2 ] || fail "RUN and --deployment: exit $rc"
rc=0
mlq generate --deployment chars --prompt a --checkpoint best 2>/dev/null || rc=$?
[ $rc = 2 ] || fail "--checkpoint with --deployment: exit $rc"
rc=0
mlq generate --deployment chars --prompt "" 2>"$tmp/err" || rc=$?
[ $rc = 2 ] && grep -q prompt "$tmp/err" || fail "an empty prompt: exit $rc"
rc=0
mlq generate --deployment chars --prompt a --temperature 101 2>"$tmp/err" || rc=$?
[ $rc = 2 ] && grep -q temperature "$tmp/err" || fail "temperature 101: exit $rc"
rc=0
mlq generate --deployment nobody --prompt a 2>"$tmp/err" || rc=$?
[ $rc = 5 ] || fail "no such deployment: exit $rc, $(cat "$tmp/err")"

# The Transformer (causal attention over a window padded after its ids).
mlq deploy "$gpt" --name chars >/dev/null || fail "rollover to the Transformer: exit $?"
same "$gpt" --prompt "a dog" --tokens 20 --temperature 0
same "$gpt" --prompt "the " --tokens 30 --temperature 0.9 --top-k 40 --seed 8
same "$gpt" --prompt "$long" --tokens 10 --seed 1

# A deployment that is no language model.
awk 'BEGIN { srand(5); print "a,b,label";
             for (i = 0; i < 100; i++) { c = i % 2; print rand() + 2 * c "," rand() "," c } }' \
    >"$tmp/data.csv"
mlq dataset import-csv "$tmp/data.csv" --header --label-column label --output "$tmp/data.h5" >/dev/null
mlp=$(mlq submit --dataset "$tmp/data.h5" --layers 2,8,2 --epochs 1 --batch-size 20)
mlq wait "$mlp" >/dev/null || fail "mlp run: exit $?"
mlq deploy "$mlp" --name mlp >/dev/null || fail "deploy mlp: exit $?"
rc=0
mlq generate --deployment mlp --prompt a 2>"$tmp/err" || rc=$?
[ $rc = 2 ] && grep -q "does not serve a language model" "$tmp/err" ||
    fail "a classifier's deployment: exit $rc, $(cat "$tmp/err")"

# Stopped cleanly, and (in a sanitized build) without a report from the broker or a trainer.
kill -INT "$up_pid"
wait "$up_pid" || fail "mlq up: exit $?"
up_pid=""
if grep -q -e 'Sanitizer' -e 'runtime error:' "$tmp/up.log"; then fail "a sanitizer report"; fi
echo "generate_deploy: ok"
