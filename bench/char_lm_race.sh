#!/usr/bin/env bash
# The character Transformer on Debian's fortunes, mlq against PyTorch given
# the same wall-clock time (issue 15): examples/char-transformer.json run by
# mlq-trainer --standalone, and the same model, optimizer and batches in
# bench/torch_char_lm.py, one after the other. Prints each side's held-out
# bits per byte and how many windows it trained on. docs/benchmarks.md.
#
# mlq's run has "max_seconds": it ends after the step in progress when the
# time is up and validates then; its clock runs from its first step and
# counts its validations at each epoch's end. PyTorch's loop stops at the
# same time from its first step and is then evaluated once.
set -euo pipefail

usage() {
    cat <<'EOT'
usage: bench/char_lm_race.sh [--build DIR] [--minutes M] [--threads N] [--data FILE.h5]
EOT
}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD="$ROOT/build"
MINUTES=10
THREADS=2
DATA=
PY=/usr/bin/python3
while [ $# -gt 0 ]; do
    case "$1" in
    --build) BUILD=$2; shift 2 ;;
    --minutes) MINUTES=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --data) DATA=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
done
for p in mlq mlq-trainer; do
    d=cli; [ $p = mlq-trainer ] && d=trainer
    [ -x "$BUILD/$d/$p" ] || { echo "char_lm_race.sh: no $BUILD/$d/$p; build first" >&2; exit 1; }
done
$PY -c "import torch, h5py" 2>/dev/null ||
    { echo "char_lm_race.sh: needs python3-torch and python3-h5py" >&2; exit 1; }
WORK=$(mktemp -d /tmp/char_lm_race.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
if [ -z "$DATA" ]; then
    DATA=$WORK/fortunes.h5
    # shellcheck disable=SC2046 # one argument per file
    "$BUILD/cli/mlq" dataset import-text $(find /usr/share/games/fortunes -type f ! -name '*.dat') \
        --context 128 --output "$DATA" >/dev/null
fi
SECONDS_BUDGET=$((MINUTES * 60))
echo "host: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)," \
     "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-(unset: mlq picks its kernel)}," \
     "$MINUTES min each, mlq at $THREADS threads"

# mlq: the example's recipe with more epochs than the time allows, and the time.
$PY - "$ROOT/examples/char-transformer.json" "$DATA" "$SECONDS_BUDGET" >"$WORK/spec.json" <<'EOT'
import json, sys
s = json.load(open(sys.argv[1]))
s["dataset"]["path"] = s["validation"]["path"] = sys.argv[2]
s["epochs"] = 1000
s["max_seconds"] = float(sys.argv[3])
s.pop("name", None)
print(json.dumps(s))
EOT
"$BUILD/trainer/mlq-trainer" --standalone "$WORK/spec.json" --threads "$THREADS" \
    --log-level warn 2>"$WORK/mlq.err" >"$WORK/mlq.out" ||
    { cat "$WORK/mlq.err" >&2; exit 1; }
$PY - "$WORK/mlq.out" "$THREADS" <<'EOT'
import json, math, sys
epochs = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
m = [e for e in epochs if "epoch" in e][-1]
trained = sum(e["seconds"] for e in epochs if "epoch" in e)
print("mlq threads %s epochs %d steps %d train_s %.1f last_train_loss %.4f "
      "val_bits_per_byte %.4f" % (sys.argv[2], m["epoch"], m["step"], trained,
                                  m["train_loss"], m["val_loss"] / math.log(2)))
EOT
# PyTorch at its best thread setting of the moment (it times 1 and 2 first).
$PY "$ROOT/bench/torch_char_lm.py" --data "$DATA" --seconds "$SECONDS_BUDGET"
