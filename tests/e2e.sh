#!/usr/bin/env bash
# End to end, as a user: mlq up, import a CSV, train, wait, eval, predict,
# export (checked with numpy), history commands, rm. Real processes, real files.
# usage: e2e.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1
src=$2
. "$(dirname "$0")/lib.sh"
# mlq up makes its keys (and mlq finds them) in ~/.config/mlq: the test's home.
mlqt_init e2e "$build"

# Three well separated classes in 4 dimensions.
mlqt_classes 7 900 3 "$tmp/data.h5"
mlq dataset info "$tmp/data.h5" --json | grep -q '"n": *900' || fail "dataset info"

mlqt_up 2
# Keys by default: mlq found the ones mlq up made; a client without them gets nothing.
mlq whoami --json | grep -q '"mechanism": *"CURVE"' || fail "whoami: not CURVE: $(mlq whoami --json)"
rc=0
XDG_CONFIG_HOME=$tmp/nokeys mlq queue >"$tmp/nokeys.out" 2>&1 || rc=$?
[ "$rc" = 6 ] && grep -Eq "requires keys|cannot reach" "$tmp/nokeys.out" ||
    fail "a client without keys: exit $rc, $(cat "$tmp/nokeys.out")"

id=$(mlq submit --dataset "$tmp/data.h5" --validation-split 0.2 --layers 4,16,3 \
         --optimizer adam --lr 0.01 --epochs 5 --batch-size 16 --name e2e)
[ "$id" = 1 ] || fail "submit printed '$id'"
mlq wait "$id" >"$tmp/wait.out" || fail "wait: exit $?"
# A line for every epoch, however short, then the end.
for k in 1 2 3 4 5; do
    [ "$(grep -c "^job 1 epoch $k/5 train_loss .* val_loss .* accuracy " "$tmp/wait.out")" = 1 ] ||
        fail "wait: epoch $k not printed once: $(cat "$tmp/wait.out")"
done
[ "$(tail -n 1 "$tmp/wait.out")" = "job 1 succeeded" ] || fail "wait: last line"

mlq show "$id" --json >"$tmp/show.json"
grep -q '"state": "succeeded"' "$tmp/show.json" || fail "show: not succeeded"
grep -q '"trainer": "' "$tmp/show.json" || fail "show: no trainer"
n_epochs=$(mlq metrics "$id" --key val_accuracy --json | grep -c '"key"')
[ "$n_epochs" = 5 ] || fail "metrics: $n_epochs val_accuracy rows, want 5"
acc=$(mlq metrics "$id" --key val_accuracy --csv | tail -n 1 | cut -d, -f4)
awk -v a="$acc" 'BEGIN { exit !(a > 0.95) }' || fail "val_accuracy $acc"

eval_id=$(mlq eval "$id" --dataset "$tmp/data.h5")
mlq wait "$eval_id" >/dev/null || fail "eval failed"
mlq show "$eval_id" --json | grep -q '"confusion_matrix"' || fail "eval result"

pred_id=$(mlq predict "$id" --input "$tmp/data.h5" --output "$tmp/pred.h5")
mlq wait "$pred_id" >/dev/null || fail "predict failed"
[ -f "$tmp/pred.h5" ] || fail "no predictions file"

mlq export "$id" --output "$tmp/model.h5" >/dev/null
set +e
/usr/bin/python3 "$src/tests/export_check.py" "$tmp/model.h5" "$tmp/data.h5" "$tmp/pred.h5"
rc=$?
set -e
[ $rc = 0 ] || [ $rc = 77 ] || fail "export check"

# A model of typed layers (conv, batch norm, pooling, dropout, a residual
# block) on the 4 features read as one 2x2 channel: trained through the
# broker, described in one line, predicted, exported and loaded into
# PyTorch, which predicts what mlq predicted.
cat >"$tmp/layers.json" <<EOF
{"kind": "train", "name": "layers", "dataset": "$tmp/data.h5", "validation_split": 0.2,
 "model": {"input": [1, 2, 2], "layers": [
   {"type": "conv2d", "out": 8, "kernel": 2, "padding": 1}, {"type": "batchnorm"},
   {"type": "relu"}, {"type": "maxpool", "kernel": 2},
   {"type": "residual", "layers": [{"type": "conv2d", "out": 8, "kernel": 1},
                                   {"type": "batchnorm"}]},
   {"type": "flatten"}, {"type": "dropout", "p": 0.1}, {"type": "dense", "out": 3}]},
 "optimizer": {"name": "adam", "lr": 0.01}, "epochs": 4, "batch_size": 16}
EOF
# Shapes are checked at submit against a dataset readable here: a pool
# over flat rows is refused with the layer and the shape.
echo '{"kind": "train", "dataset": "'"$tmp"'/data.h5", "model": {"layers": [
  {"type": "maxpool", "kernel": 2}, {"type": "flatten"}, {"type": "dense", "out": 3}]}}' \
    >"$tmp/badshape.json"
set +e
mlq submit --spec "$tmp/badshape.json" 2>"$tmp/badshape.err"
rc=$?
set -e
[ $rc != 0 ] && grep -q "layer 0 (maxpool)" "$tmp/badshape.err" ||
    fail "submit of a pool over flat rows: exit $rc, $(cat "$tmp/badshape.err")"
lid=$(mlq submit --spec "$tmp/layers.json")
mlq wait "$lid" >/dev/null || fail "layered model: $(mlq show "$lid" | grep error)"
mlq show "$lid" | grep -q "model  *conv8-bn-pool-res(conv8-bn)-fc3" || fail "show: model line"
mlq show "$lid" --json | grep -q '"model": "conv8-bn-pool-res(conv8-bn)-fc3"' || fail "show --json"
mlq runs | grep -q "conv8-bn-pool-res(conv8-bn)-fc3" || fail "runs: model line"
lpred=$(mlq predict "$lid" --input "$tmp/data.h5" --output "$tmp/lpred.h5")
mlq wait "$lpred" >/dev/null || fail "layered predict failed"
mlq export "$lid" --output "$tmp/lmodel.h5" >/dev/null || fail "layered export"
set +e
# 720 training rows (900 less the 0.2 split) in batches of 16 for 4 epochs:
# 180 steps, which each batch norm's num_batches_tracked counts as torch's.
/usr/bin/python3 "$src/tests/export_torch.py" "$tmp/lmodel.h5" "$tmp/data.h5" "$tmp/lpred.h5" \
    --steps 180
rc=$?
set -e
[ $rc = 0 ] || [ $rc = 77 ] || fail "export into PyTorch"
mlq rm "$lpred" >/dev/null
mlq rm "$lid" >/dev/null

# A time limit ends a run of many epochs early, a success with its reason;
# the run is then removed, so the counts below are unchanged.
tl_id=$(mlq submit --dataset "$tmp/data.h5" --validation-split 0.2 --layers 4,16,3 \
            --epochs 100000 --batch-size 1 --max-seconds 1 --name timed)
mlq wait "$tl_id" >/dev/null || fail "a run with max_seconds did not succeed"
mlq show "$tl_id" --json >"$tmp/timed.json"
grep -q '"timed_out": true' "$tmp/timed.json" || fail "max_seconds: no timed_out in the result"
grep -q 'reached max_seconds (1 s) in epoch [0-9]* of 100000' "$tmp/timed.json" ||
    fail "max_seconds: no note: $(cat "$tmp/timed.json")"
mlq rm "$tl_id" >/dev/null

# A relative path that does not exist where mlq runs is the trainer's to
# resolve under its data.root.
rel_id=$(cd / && mlq submit --dataset data.h5 --layers 4,8,3 --epochs 1 --name relative)
mlq wait "$rel_id" >/dev/null || fail "a job with a path relative to data.root failed"
mlq show "$rel_id" --json | grep -q '"path": "data.h5"' || fail "relative path kept in the spec"
mlq rm "$rel_id" >/dev/null

# A second run to compare, then history and removal.
id2=$(mlq submit --dataset "$tmp/data.h5" --validation-split 0.2 --layers 4,16,3 \
          --optimizer sgd --lr 0.1 --epochs 3 --wait --json | grep -o '"id": *[0-9]*' | head -n 1 |
      grep -o '[0-9]*$')
mlq compare "$id" "$id2" | grep -q "optimizer.name" || fail "compare"
[ "$(mlq runs --json | grep -c '"id"')" = 4 ] || fail "runs lists 4"
mlq rm "$id2" >/dev/null
set +e
mlq show "$id2" >/dev/null 2>&1
rc=$?
set -e
[ $rc = 5 ] || fail "show of a removed run: exit $rc, want 5"
echo "e2e: ok"
