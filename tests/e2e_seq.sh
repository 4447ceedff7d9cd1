#!/usr/bin/env bash
# End to end with a sequence model: text imported with mlq dataset
# import-text, a character-level LSTM language model trained through mlq up
# (broker and trainer), its per-epoch loss, perplexity and bits per byte
# recorded, their exports loaded into PyTorch (where it is installed); and
# the refusals: empty text, a vocabulary smaller than a byte
# of the data, a recurrent layer fed images without a sequence reading.
# usage: e2e_seq.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1
src=$2
. "$(dirname "$0")/lib.sh"
# mlq up makes its keys (and mlq finds them) in ~/.config/mlq: the test's home.
mlqt_init e2e_seq "$build"

# A small, learnable text: a few sentences in a varying order (no fortunes
# needed), 24 KiB.
mlqt_text 24576 "$tmp/text.txt"
: >"$tmp/empty.txt"

# ---- import-text ----
out=$(mlq dataset import-text "$tmp/text.txt" --context 32 --output "$tmp/text.h5")
echo "$out" | grep -q "X, y uint8 (" || fail "import-text: $out"
mlq dataset info "$tmp/text.h5" --json >"$tmp/info.json"
json() { /usr/bin/python3 -c "import json, sys; d = json.load(sys.stdin); print($1)"; }
set +e
mlq dataset import-text "$tmp/empty.txt" --context 32 --output "$tmp/e.h5" 2>"$tmp/err"
rc=$?
set -e
[ $rc != 0 ] && grep -q "no text" "$tmp/err" || fail "empty text: exit $rc, $(cat "$tmp/err")"
[ ! -e "$tmp/e.h5" ] || fail "empty text left a file"
set +e
mlq dataset import-text "$tmp/text.txt" --context 0 --output "$tmp/e.h5" 2>"$tmp/err"
rc=$?
set -e
[ $rc = 2 ] && grep -q "context" "$tmp/err" || fail "--context 0: exit $rc, $(cat "$tmp/err")"

mlqt_up 1 --threads 1

lm() { # NAME VOCAB
    cat <<EOT
{"name": "$1", "dataset": "$tmp/text.h5",
 "validation": {"path": "$tmp/text.h5", "x": "X_val", "y": "y_val"},
 "model": {"layers": [{"type": "embedding", "vocab": $2, "out": 16},
                      {"type": "lstm", "out": 48},
                      {"type": "dense", "out": 256}]},
 "optimizer": {"name": "adam", "lr": 0.01},
 "batch_size": 16, "epochs": 8, "seed": 5}
EOT
}
lm char-lstm 256 >"$tmp/lm.json"
id=$(mlq submit --spec "$tmp/lm.json")
mlq wait "$id" >"$tmp/wait.out" || fail "char-lstm run: exit $?, $(cat "$tmp/wait.out")"
mlq metrics "$id" --csv >"$tmp/metrics.csv"
for key in train_loss val_loss val_perplexity val_bits_per_byte train_bits_per_byte; do
    grep -q ",$key," "$tmp/metrics.csv" || grep -q "$key" "$tmp/metrics.csv" || fail "no $key metric"
done
bpb=$(mlq metrics "$id" --key val_bits_per_byte --csv | tail -n 1 | cut -d, -f4)
first=$(mlq metrics "$id" --key val_bits_per_byte --csv | sed -n 2p | cut -d, -f4)
# Uniform over 256 bytes is 8 bits; five sentences in any order are far
# less: a few epochs reach about 1.
awk -v b="$bpb" 'BEGIN { exit !(b < 3.0) }' || fail "val_bits_per_byte $bpb"
awk -v a="$first" -v b="$bpb" 'BEGIN { exit !(b < a) }' || fail "bits per byte $first -> $bpb"
echo "e2e_seq: char-lstm val_bits_per_byte $first -> $bpb"

# Text from the run, as a job through the broker: deterministic for a seed.
g1=$(mlq generate "$id" --prompt "the " --tokens 40 --temperature 0.8 --top-k 20 --seed 3) ||
    fail "generate: exit $?"
g2=$(mlq generate "$id" --prompt "the " --tokens 40 --temperature 0.8 --top-k 20 --seed 3)
g3=$(mlq generate "$id" --prompt "the " --tokens 40 --temperature 0.8 --top-k 20 --seed 4)
[ "$g1" = "$g2" ] || fail "generate is not deterministic: '$g1' then '$g2'"
[ "$g1" != "$g3" ] || fail "generate: seeds 3 and 4 give the same text"
case "$g1" in "the "*) ;; *) fail "generate does not start with its prompt: '$g1'" ;; esac
[ ${#g1} -ge 40 ] || fail "generate: '$g1' is short"
greedy=$(mlq generate "$id" --prompt "she sells" --tokens 12 --temperature 0)
echo "e2e_seq: generate: '$g1' / greedy '$greedy'"
# The training text's sentences: greedy decoding goes on with one.
case "$greedy" in "she sells sea"*) ;; *) fail "greedy: '$greedy'" ;; esac
set +e
mlq generate "$id" --prompt "" --tokens 5 2>"$tmp/err"
rc=$?
set -e
[ $rc != 0 ] && grep -q "prompt" "$tmp/err" || fail "empty prompt: exit $rc, $(cat "$tmp/err")"
eval_id=$(mlq eval "$id" --dataset "$tmp/text.h5")
mlq wait "$eval_id" >/dev/null || fail "eval of the language model"
mlq show "$eval_id" --json | grep -q '"bits_per_byte"' || fail "eval: no bits_per_byte"

# The export in PyTorch: the state_dict loads strictly into the same torch
# modules, whose loss over the file is what mlq eval reported (skipped
# where torch or h5py is missing: the default run needs neither).
torch_check() { # RUN WHAT
    local ev rc
    mlq export "$1" --output "$tmp/export-$1.h5" >/dev/null || fail "$2: export"
    ev=$(mlq eval "$1" --dataset "$tmp/text.h5")
    mlq wait "$ev" >/dev/null || fail "$2: eval"
    mlq show "$ev" --json | json "repr(d['result']['loss'])" >"$tmp/loss" || fail "$2: eval loss"
    set +e
    /usr/bin/python3 "$src/tests/export_torch.py" "$tmp/export-$1.h5" "$tmp/text.h5" \
        --loss "$(cat "$tmp/loss")"
    rc=$?
    set -e
    [ $rc = 0 ] || [ $rc = 77 ] || fail "$2: the export in PyTorch"
}
torch_check "$id" char-lstm

# A 2-layer GRU, briefly: its export too.
cat >"$tmp/gru.json" <<EOT
{"name": "char-gru", "dataset": "$tmp/text.h5",
 "model": {"layers": [{"type": "embedding", "vocab": 256, "out": 16},
                      {"type": "gru", "out": 24, "num_layers": 2},
                      {"type": "dense", "out": 256}]},
 "optimizer": {"name": "adam", "lr": 0.01},
 "batch_size": 16, "epochs": 1, "seed": 5}
EOT
gru=$(mlq submit --spec "$tmp/gru.json")
mlq wait "$gru" >"$tmp/wait.out" || fail "char-gru run: exit $?, $(cat "$tmp/wait.out")"
torch_check "$gru" char-gru

# A small causal Transformer on the same text.
cat >"$tmp/gpt.json" <<EOT
{"name": "char-gpt", "dataset": "$tmp/text.h5",
 "validation": {"path": "$tmp/text.h5", "x": "X_val", "y": "y_val"},
 "model": {"layers": [{"type": "embedding", "vocab": 256, "out": 32},
                      {"type": "positional", "vocab": 32},
                      {"type": "transformer", "heads": 2, "causal": true},
                      {"type": "transformer", "heads": 2, "causal": true},
                      {"type": "layernorm"},
                      {"type": "dense", "out": 256}]},
 "optimizer": {"name": "adamw", "lr": 0.003},
 "batch_size": 16, "epochs": 3, "seed": 5}
EOT
gpt=$(mlq submit --spec "$tmp/gpt.json")
mlq wait "$gpt" >"$tmp/wait.out" || fail "char-gpt run: exit $?, $(cat "$tmp/wait.out")"
bpb=$(mlq metrics "$gpt" --key val_bits_per_byte --csv | tail -n 1 | cut -d, -f4)
awk -v b="$bpb" 'BEGIN { exit !(b < 3.0) }' || fail "char-gpt val_bits_per_byte $bpb"
g=$(mlq generate "$gpt" --prompt "a dog" --tokens 20 --temperature 0)
echo "e2e_seq: char-gpt val_bits_per_byte $bpb, greedy '$g'"
torch_check "$gpt" char-gpt

# Bad specs, refused at submit with the reason.
refused() { # WHAT WANT LAYERS
    cat >"$tmp/bad.json" <<EOT
{"dataset": "$tmp/text.h5", "model": {"input": [32], "layers": $3}}
EOT
    set +e
    mlq submit --spec "$tmp/bad.json" 2>"$tmp/err"
    local rc=$?
    set -e
    [ $rc != 0 ] && grep -q "$2" "$tmp/err" || fail "$1: exit $rc, $(cat "$tmp/err")"
}
refused "heads not dividing the width" "3 heads do not divide the width 32" \
    '[{"type": "embedding", "vocab": 256, "out": 32},
      {"type": "transformer", "heads": 3}, {"type": "dense", "out": 256}]'
refused "a sequence beyond the positional table" "beyond the positional table's 16" \
    '[{"type": "embedding", "vocab": 256, "out": 32}, {"type": "positional", "vocab": 16},
      {"type": "dense", "out": 256}]'

# A vocabulary smaller than the bytes of the text: the run fails, naming it.
lm small-vocab 64 >"$tmp/small.json"
id=$(mlq submit --spec "$tmp/small.json")
set +e
mlq wait "$id" >"$tmp/wait.out" 2>&1
rc=$?
set -e
[ $rc != 0 ] || fail "vocab 64 on text: the run succeeded"
mlq show "$id" --json >"$tmp/show.json"
grep -q "outside the embedding's vocabulary \[0, 64)" "$tmp/show.json" ||
    fail "vocab 64: $(cat "$tmp/show.json")"

# An LSTM fed images without a sequence reading is refused at submit.
cat >"$tmp/img.json" <<EOT
{"dataset": "$tmp/text.h5", "model": {"input": [1, 8, 8],
 "layers": [{"type": "lstm", "out": 8}, {"type": "dense", "out": 4}]}}
EOT
set +e
mlq submit --spec "$tmp/img.json" 2>"$tmp/err"
rc=$?
set -e
[ $rc != 0 ] && grep -q "needs a sequence (T, features)" "$tmp/err" ||
    fail "lstm on images: exit $rc, $(cat "$tmp/err")"
echo "e2e_seq: ok"
