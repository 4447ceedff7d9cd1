# Shared set-up of the shell tests that start real mlq processes; sourced,
# not run: `. "$(dirname "$0")/lib.sh"; mlqt_init NAME BUILD_DIR`.
#
# mlqt_init gives the test a scratch directory ($tmp) that goes away at exit,
# a home of its own (a key pinned in the tester's ~/.config/mlq would make
# every plaintext command refuse the test's broker), a database, an ipc
# broker endpoint and an empty config file in it, the build's binaries first
# on PATH, and fail(), which prints the tail of mlq up's log. A test that
# needs more at exit defines mlqt_cleanup_extra before it calls mlqt_init.

# mlqt_init NAME BUILD_DIR
mlqt_init() {
    mlqt_name=$1
    export PATH=$2/cli:$2/broker:$2/trainer:$PATH
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/mlq-$mlqt_name-XXXXXX")
    up_pid=""
    trap mlqt_cleanup EXIT
    unset MLQ_BROKER_ENDPOINT MLQ_BROKER_BIND MLQ_DB_PATH MLQ_TIMEOUT_MS
    export MLQ_DB=$tmp/mlq.db
    export MLQ_BROKER=ipc://$tmp/broker.sock
    export MLQ_CONFIG=$tmp/none.conf
    export MLQ_DATA_ROOT=$tmp # the trainers' base for relative dataset paths
    export HOME=$tmp/home XDG_CONFIG_HOME=$tmp/home/.config XDG_DATA_HOME=$tmp/home/.local/share
    export XDG_CACHE_HOME=$tmp/home/.cache
    mkdir -p "$HOME"
    : >"$MLQ_CONFIG"
}

mlqt_cleanup() {
    if declare -F mlqt_cleanup_extra >/dev/null; then mlqt_cleanup_extra || true; fi
    [ -n "$up_pid" ] && kill -INT "$up_pid" 2>/dev/null && wait "$up_pid" 2>/dev/null
    rm -rf "$tmp"
}

fail() {
    echo "$mlqt_name: FAIL: $*" >&2
    [ -f "$tmp/up.log" ] && tail -n 30 "$tmp/up.log" >&2
    exit 1
}

# mlqt_up TRAINERS [mlq up's other flags...]: mlq up in the background on
# $MLQ_BROKER, its output in $tmp/up.log; returns when TRAINERS are idle.
mlqt_up() {
    local n=$1
    shift
    mlq up --trainers "$n" "$@" --bind "$MLQ_BROKER" >"$tmp/up.log" 2>&1 &
    up_pid=$!
    for _ in $(seq 300); do
        [ "$(mlq workers 2>/dev/null | grep -c idle)" = "$n" ] && return 0
        sleep 0.1
    done
    fail "$n idle trainers"
}

# mlqt_classes SEED ROWS SPREAD OUT.h5: three classes in 4 dimensions, each
# shifted by SPREAD along its own axis (3: well apart, 0.8: overlapping), as
# a CSV with a header imported into OUT.h5 (labels in column "label").
mlqt_classes() {
    awk -v seed="$1" -v rows="$2" -v spread="$3" 'BEGIN { srand(seed); print "a,b,c,d,label";
        for (i = 0; i < rows; i++) { c = i % 3; row = "";
            for (j = 0; j < 4; j++) row = row (j ? "," : "") (rand() - 0.5 + (j == c ? spread : 0));
            print row "," c } }' >"$tmp/classes.csv"
    mlq dataset import-csv "$tmp/classes.csv" --header --label-column label --output "$4" >/dev/null
}

# mlqt_text BYTES OUT.txt: a small learnable English text, a few sentences
# in a seeded order (no fortunes needed).
mlqt_text() {
    /usr/bin/python3 - "$1" "$2" <<'PY'
import random, sys
random.seed(7)
lines = ["the cat sat on the mat.", "a dog ran in the park.", "we like to read books.",
         "it is a sunny day.", "she sells sea shells."]
with open(sys.argv[2], "w") as f:
    while f.tell() < int(sys.argv[1]):
        f.write(random.choice(lines) + "\n")
PY
}
