#!/usr/bin/env bash
# End to end with layered models on real Fashion-MNIST: mlq up, a small
# subset imported with mlq dataset import-idx, a tiny conv+BN+dropout model
# (augmented) and a tiny residual model trained side by side through the
# broker, then eval, predict and export of each: above chance after a short
# run, predict agrees with eval, the export loads (h5py and PyTorch when
# installed, else that check is skipped).
# usage: e2e_cnn.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1
src=$2
idx=${MLQ_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
[ -f "$idx/train-images-idx3-ubyte.gz" ] || { echo "e2e_cnn: no Fashion-MNIST in $idx; skipping"; exit 77; }
. "$(dirname "$0")/lib.sh"
# mlq up makes its keys (and mlq finds them) in ~/.config/mlq: the test's home.
mlqt_init e2e_cnn "$build"

# The first N images and labels of an IDX pair, as IDX files of N.
be32() { printf "%08x" "$1" | xxd -r -p; }
subset() { # IMAGES LABELS N OUT
    set +o pipefail
    { printf '\x00\x00\x08\x03'; be32 "$3"; be32 28; be32 28
      zcat "$1" | tail -c +17 | head -c $(($3 * 784)); } >"$4-images.idx"
    { printf '\x00\x00\x08\x01'; be32 "$3"; zcat "$2" | tail -c +9 | head -c "$3"; } >"$4-labels.idx"
    set -o pipefail
    mlq dataset import-idx "$4-images.idx" "$4-labels.idx" --output "$4.h5" >/dev/null
}
subset "$idx/train-images-idx3-ubyte.gz" "$idx/train-labels-idx1-ubyte.gz" 3000 "$tmp/train"
subset "$idx/t10k-images-idx3-ubyte.gz" "$idx/t10k-labels-idx1-ubyte.gz" 1000 "$tmp/test"
mlq dataset info "$tmp/train.h5" --json | grep -q '"n": *3000' || fail "dataset info"

mlqt_up 2 --threads 1

spec() { # NAME LAYERS [EXTRA]
    cat <<EOT
{"name": "$1", "dataset": "$tmp/train.h5", "validation": "$tmp/test.h5",
 "model": {"layers": $2}, "optimizer": {"name": "adam", "lr": 0.003},
 "batch_size": 32, "epochs": 3, "seed": 3 ${3:-}}
EOT
}
spec conv '[{"type": "conv2d", "out": 8, "kernel": 3, "padding": 1}, {"type": "batchnorm"},
  {"type": "relu"}, {"type": "maxpool", "kernel": 2},
  {"type": "conv2d", "out": 16, "kernel": 3, "padding": 1}, {"type": "batchnorm"},
  {"type": "relu"}, {"type": "maxpool", "kernel": 2}, {"type": "flatten"},
  {"type": "dropout", "p": 0.25}, {"type": "dense", "out": 10}]' \
  ', "augment": {"random_crop": {"padding": 2}, "horizontal_flip": true}' >"$tmp/conv.json"
spec resnet '[{"type": "conv2d", "out": 8, "kernel": 3, "padding": 1, "bias": false},
  {"type": "batchnorm"}, {"type": "relu"}, {"type": "maxpool", "kernel": 2},
  {"type": "residual", "layers": [
     {"type": "conv2d", "out": 16, "kernel": 3, "stride": 2, "padding": 1, "bias": false},
     {"type": "batchnorm"}, {"type": "relu"},
     {"type": "conv2d", "out": 16, "kernel": 3, "padding": 1, "bias": false},
     {"type": "batchnorm"}],
   "shortcut": [{"type": "conv2d", "out": 16, "kernel": 1, "stride": 2, "bias": false},
     {"type": "batchnorm"}]},
  {"type": "relu"}, {"type": "global_avgpool"}, {"type": "flatten"},
  {"type": "dense", "out": 10}]' >"$tmp/resnet.json"

conv=$(mlq submit --spec "$tmp/conv.json")
resnet=$(mlq submit --spec "$tmp/resnet.json")
mlq wait "$conv" >"$tmp/wait-conv.out" || fail "conv run: exit $?"
mlq wait "$resnet" >"$tmp/wait-resnet.out" || fail "resnet run: exit $?"

json() { /usr/bin/python3 -c "import json, sys; d = json.load(sys.stdin); print($1)"; }
for id in "$conv" "$resnet"; do
    mlq show "$id" --json >"$tmp/show.json"
    grep -q '"state": "succeeded"' "$tmp/show.json" || fail "run $id did not succeed"
    acc=$(mlq metrics "$id" --key val_accuracy --csv | tail -n 1 | cut -d, -f4)
    # Ten classes: chance is 0.1; 3 epochs on 3000 images reach about 0.75.
    awk -v a="$acc" 'BEGIN { exit !(a > 0.55) }' || fail "run $id: val_accuracy $acc"

    eval_id=$(mlq eval "$id" --dataset "$tmp/test.h5")
    mlq wait "$eval_id" >/dev/null || fail "eval of $id failed"
    mlq show "$eval_id" --json >"$tmp/eval.json"
    # Validation is never augmented: eval of the last checkpoint on the
    # validation file gets the run's last val_accuracy.
    eacc=$(json 'd["result"]["accuracy"]' <"$tmp/eval.json")
    awk -v a="$acc" -v b="$eacc" 'BEGIN { d = a - b; exit !(d < 1e-4 && d > -1e-4) }' ||
        fail "run $id: eval accuracy $eacc, the run's last val_accuracy $acc"

    pred_id=$(mlq predict "$id" --input "$tmp/test.h5" --output "$tmp/pred-$id.h5")
    mlq wait "$pred_id" >/dev/null || fail "predict of $id failed"
    [ -f "$tmp/pred-$id.h5" ] || fail "no predictions file for $id"
    # Predict agrees with eval: its class counts are the confusion matrix's columns.
    mlq show "$pred_id" --json >"$tmp/pred.json"
    counts=$(json '",".join(str(c) for c in d["result"]["class_counts"])' <"$tmp/pred.json")
    cols=$(json '",".join(str(sum(r[k] for r in d["result"]["confusion_matrix"])) for k in range(10))' \
           <"$tmp/eval.json")
    [ "$counts" = "$cols" ] || fail "run $id: predict counts $counts, eval's predicted $cols"

    mlq export "$id" --output "$tmp/model-$id.h5" >/dev/null || fail "export of $id"
    set +e
    # 3000 rows in batches of 32 (94) for 3 epochs: each batch norm counted 282.
    /usr/bin/python3 "$src/tests/export_torch.py" "$tmp/model-$id.h5" "$tmp/test.h5" "$tmp/pred-$id.h5" \
        --steps 282
    rc=$?
    set -e
    [ $rc = 0 ] || [ $rc = 77 ] || fail "export of $id does not load into PyTorch"
    echo "e2e_cnn: run $id: val_accuracy $acc, eval $eacc, predict counts $counts"
done
echo "e2e_cnn: ok"
