#!/usr/bin/env bash
# libmlq as a user gets it: `cmake --install` into a scratch prefix, then
# client/example.c compiled with the installed mlq.h and mlq.pc only, and run
# against a real broker and trainers (it trains, deploys, infers, cancels).
# The Python module is installed beside it and imported from there.
# Usage: test_client_install.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1 src=$2
tmp=$(mktemp -d /tmp/mlq-client-install-XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
libdir=$(dirname "$(find "$tmp/prefix" -name libmlq.so | head -1)")
export PKG_CONFIG_PATH=$libdir/pkgconfig
# shellcheck disable=SC2086 # EXAMPLE_CFLAGS: flags, one word each
cc ${EXAMPLE_CFLAGS:-} "$src/client/example.c" $(pkg-config --cflags --libs mlq) -Wl,-rpath,"$libdir" -o "$tmp/example"
test -f "$tmp/prefix/include/mlq.h"
# The licence, as the .deb carries it: Debian's copyright file beside the docs.
copyright=$tmp/prefix/share/doc/mlq/copyright
grep -q "^License: Expat" "$copyright"
grep -q "^ Permission is hereby granted, free of charge" "$copyright"
grep -q "^ \.$" "$copyright"
cmp -s "$src/LICENSE" "$tmp/prefix/share/doc/mlq/LICENSE"
python3=/usr/bin/python3
pydir=$(find "$tmp/prefix" -type d -path "*python3/dist-packages" | head -1)
test -f "$pydir/mlq/__init__.py"

: > "$tmp/mlq.conf"
export MLQ_CONFIG=$tmp/mlq.conf XDG_CONFIG_HOME=$tmp MLQ_BROKER=ipc://$tmp/b.sock
"$build/broker/mlq-broker" --db "$tmp/mlq.db" --bind "$MLQ_BROKER" --heartbeat-ms 100 \
    --liveness 10 >"$tmp/broker.log" 2>&1 & pids+=($!)
for t in t1 t2; do
    "$build/trainer/mlq-trainer" --broker "$MLQ_BROKER" --name $t --heartbeat-ms 100 \
        --liveness 10 --threads 1 >"$tmp/$t.log" 2>&1 & pids+=($!)
done
$python3 - "$tmp/train.h5" <<'PY'
import sys, h5py, numpy as np
r = np.random.default_rng(1); y = r.integers(0, 3, 200).astype(np.int32)
x = r.normal(size=(200, 5)).astype(np.float32); x[np.arange(200), y] += 3
with h5py.File(sys.argv[1], "w") as f: f["X"], f["y"] = x, y
PY
for i in $(seq 50); do "$build/cli/mlq" queue >/dev/null 2>&1 && break; sleep 0.1; done
out=$("$tmp/example" "$tmp/train.h5" 5 3) || { echo "$out"; tail -n 20 "$tmp"/*.log; exit 1; }
echo "$out"
grep -q "^run 1 succeeded" <<<"$out"
grep -q "^row 3: class" <<<"$out"
grep -q "cancelled$" <<<"$out"
PYTHONPATH=$pydir $python3 -c "
import mlq, numpy as np
c = mlq.Client()
a = c.infer('example', np.eye(5, dtype=np.float32)[:2] * 3)
assert a.probabilities.shape == (2, 3), a
print('installed python module: classes', list(a.classes))
"
echo "libmlq and the python module, installed: ok"
