#!/usr/bin/env bash
# The first run: installs what is missing, builds mlq, imports Fashion-MNIST,
# starts the local stack (a broker and a trainer), trains the seed article's
# MLP through the broker, and prints the test accuracy.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
echo "== building mlq"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
bin=$PWD/build
mlq=$bin/cli/mlq

src=/usr/share/datasets/fashion-mnist
mkdir -p data
# Every image: the README's tour leaves only the first 10,000 (--limit) in the same files.
rows() { $mlq dataset info "$1" --json 2>/dev/null | tr -d ' \n' | grep -o '"n":[0-9]*' | head -n 1; }
[ "$(rows data/fashion-mnist-train.h5)" = '"n":60000' ] ||
    $mlq dataset import-idx $src/train-images-idx3-ubyte.gz $src/train-labels-idx1-ubyte.gz \
        --output data/fashion-mnist-train.h5
[ "$(rows data/fashion-mnist-test.h5)" = '"n":10000' ] ||
    $mlq dataset import-idx $src/t10k-images-idx3-ubyte.gz $src/t10k-labels-idx1-ubyte.gz \
        --output data/fashion-mnist-test.h5

# The local stack, unless a broker already answers (a second run, or systemd).
up_pid=""
if ! $mlq queue >/dev/null 2>&1; then
    echo "== starting the local stack: mlq up (log: data/mlq-up.log)"
    $mlq up --trainers 1 >data/mlq-up.log 2>&1 &
    up_pid=$!
    trap '[ -n "$up_pid" ] && kill -INT $up_pid 2>/dev/null && wait $up_pid 2>/dev/null || true' EXIT
    for _ in $(seq 50); do
        $mlq workers 2>/dev/null | grep -q idle && break
        sleep 0.2
    done
fi

echo "== training 784-128-64-10 (ReLU, SGD lr 0.01, batch 64, 10 epochs) through the broker"
id=$($mlq submit --spec examples/seed-mlp.json)
$mlq wait "$id"

acc=$($mlq metrics "$id" --key val_accuracy --json | grep -o '"value": *[0-9.]*' | tail -n 1 |
      awk '{printf "%.4f", $2}')
db=${MLQ_DB:-${XDG_DATA_HOME:-$HOME/.local/share}/mlq/mlq.db}
cat <<EOT

== run $id: test accuracy $acc on the 10,000 Fashion-MNIST test images

Look at the history in $db:
  export PATH=$bin/cli:$bin/broker:$bin/trainer:\$PATH
  mlq runs                      # every run, newest first
  mlq show $id                    # spec, timings, final metrics, checkpoints
  mlq metrics $id                 # per-epoch metrics with a chart
  mlq eval $id --dataset data/fashion-mnist-test.h5 --wait   # (with 'mlq up' running)
  mlq export $id --output model.h5
EOT
