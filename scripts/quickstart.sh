#!/usr/bin/env bash
# The first run: installs what is missing, builds mlq, imports Fashion-MNIST
# and trains the seed article's MLP on it, then prints the test accuracy.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
mlq=build/cli/mlq
trainer=build/trainer/mlq-trainer

src=/usr/share/datasets/fashion-mnist
mkdir -p data
[ -f data/fashion-mnist-train.h5 ] ||
    $mlq dataset import-idx $src/train-images-idx3-ubyte.gz $src/train-labels-idx1-ubyte.gz \
        --output data/fashion-mnist-train.h5
[ -f data/fashion-mnist-test.h5 ] ||
    $mlq dataset import-idx $src/t10k-images-idx3-ubyte.gz $src/t10k-labels-idx1-ubyte.gz \
        --output data/fashion-mnist-test.h5

echo "== training 784-128-64-10 (ReLU, SGD lr 0.01, batch 64, 10 epochs) on Fashion-MNIST"
$trainer --standalone examples/seed-mlp.json | tee data/quickstart-run.jsonl
acc=$(tail -n 1 data/quickstart-run.jsonl | sed -n 's/.*"val_accuracy":\([0-9.]*\).*/\1/p')
echo "== test accuracy: $acc"
