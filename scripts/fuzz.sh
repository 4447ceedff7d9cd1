#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz, clang, ASan + UBSan) in build-fuzz/ and runs
# each for a bounded time on its committed seeds (docs/security.md, "Fuzzing").
# Usage: scripts/fuzz.sh [--time SECONDS] [--jobs N] [TARGET...]
#   --time   seconds per target (default 60)
#   --jobs   targets run at once (default: the number of cores, at most 2)
#   TARGET   e.g. fuzz_spec; default all but fuzz_dataset_direct (see below)
# Exit 0 when no target found anything; 1 when one crashed, leaked, broke an invariant
# or timed out on an input: the input is saved under build-fuzz/artifacts/ and the
# command that replays it is printed. New inputs go to build-fuzz/corpus/TARGET/, which
# later runs start from; the committed seeds in tests/fuzz/corpus/ are only read.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=60
jobs=$(nproc)
[ "$jobs" -gt 2 ] && jobs=2
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
    --time) seconds=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    -h|--help) sed -n '2,11s/^# \{0,1\}//p' "$0"; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
    esac
done

# Longest input per target: each is well above its seeds and bounds the time of one run.
declare -A max_len=([fuzz_proto]=4096 [fuzz_spec]=4096 [fuzz_checkpoint]=8192
                    [fuzz_dataset]=16384 [fuzz_dataset_direct]=16384
                    [fuzz_import_csv]=2048 [fuzz_import_idx]=2048)
# Committed seeds per target. fuzz_dataset (reads in reader processes, as the trainer)
# also starts from files that crash libhdf5 itself, each of which it must refuse;
# fuzz_dataset_direct reads in process and would stop at the first of them.
declare -A seeds=([fuzz_dataset]="tests/fuzz/corpus/fuzz_dataset tests/fuzz/corpus/libhdf5-crashes"
                  [fuzz_dataset_direct]="tests/fuzz/corpus/fuzz_dataset")
# The default set; fuzz_dataset_direct finds libhdf5's own crashes (docs/security.md),
# for long runs by hand: scripts/fuzz.sh --time 900 fuzz_dataset_direct
[ ${#targets[@]} -eq 0 ] && targets=(fuzz_dataset fuzz_proto fuzz_checkpoint fuzz_spec
                                     fuzz_import_csv fuzz_import_idx)
for t in "${targets[@]}"; do
    [ -n "${max_len[$t]:-}" ] || { echo "fuzz.sh: no target $t (${!max_len[*]})" >&2; exit 2; }
done

scripts/install-deps.sh --fuzz
dir=build-fuzz
cmake -S . -B "$dir" -DCMAKE_C_COMPILER=clang -DMLQ_FUZZ=ON -DBUILD_TESTING=OFF \
      -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_FLAGS_DEBUG="-g -O1" >/dev/null
cmake --build "$dir" -j"$(nproc)" --target "${targets[@]}"
mkdir -p "$dir/artifacts" "$dir/logs"
bin=$dir/tests/fuzz
# The targets rewrite one input file per run: on tmpfs that costs microseconds, on ext4
# a journal commit (20 times slower). Removed at exit, with what a crash left behind.
TMPDIR=$(mktemp -d "$( [ -w /dev/shm ] && echo /dev/shm || echo "${TMPDIR:-/tmp}")/mlq-fuzz.XXXXXX")
export TMPDIR
trap 'rm -rf "$TMPDIR"' EXIT
export LSAN_OPTIONS=suppressions=$PWD/tests/fuzz/lsan.supp
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# A failed malloc returns NULL, as in production (libhdf5 asks for absurd sizes on damaged
# files and copes); one above -rss_limit_mb still fails the run as out-of-memory.
export ASAN_OPTIONS=allocator_may_return_null=1

# One target: libFuzzer exits non-zero on a crash, a leak, an abort from a broken
# invariant, an input slower than -timeout, or more memory than -rss_limit_mb.
run_one() {
    local t=$1 corpus=$dir/corpus/$1 dict=()
    mkdir -p "$corpus"
    local from
    read -r -a from <<<"${seeds[$t]:-tests/fuzz/corpus/$t}"
    [ -f "tests/fuzz/${t%_direct}.dict" ] && dict=(-dict="tests/fuzz/${t%_direct}.dict")
    timeout $((seconds + 120)) "$bin/$t" "$corpus" "${from[@]}" "${dict[@]}" \
        -max_total_time="$seconds" -max_len="${max_len[$t]}" -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$dir/artifacts/$t-" -print_final_stats=1 >"$dir/logs/$t.log" 2>&1
}

# What a finished run says: execs, speed, corpus, or the saved input and its replay.
report() {
    local t=$1 rc=$2 log=$dir/logs/$1.log
    local execs speed done
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    # "#N DONE cov: C ft: F corp: INPUTS/BYTES ...": the corpus libFuzzer ended with.
    done=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 |
           sed -E 's/.*cov: ([0-9]+).*corp: ([0-9]+)\/([0-9a-zA-Z]+).*/cov \1, corpus \2 inputs (\3)/')
    if [ "$rc" -eq 0 ]; then
        printf '%-16s ok  %10s execs %7s/s  %s\n' "$t" "${execs:-?}" "${speed:-?}" "${done:-?}"
        return 0
    fi
    local input
    input=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    printf '%-16s FAILED (exit %s); log %s\n' "$t" "$rc" "$log"
    grep -m1 -E 'ERROR: |invariant broken|SUMMARY: ' "$log" | sed 's/^/    /' || true
    if [ -n "$input" ]; then
        echo "    input saved: $input"
        echo "    reproduce:   LSAN_OPTIONS=$LSAN_OPTIONS MLQ_FUZZ_VERBOSE=1 $bin/$t $input"
    fi
    return 1
}

echo "== fuzzing ${targets[*]}: ${seconds}s each, $jobs at a time (logs in $dir/logs)"
failed=0
pids=()
names=()
reap() { # waits for the oldest running target
    local rc=0
    wait "${pids[0]}" || rc=$?
    report "${names[0]}" "$rc" || failed=1
    pids=("${pids[@]:1}")
    names=("${names[@]:1}")
}
for t in "${targets[@]}"; do
    [ ${#pids[@]} -ge "$jobs" ] && reap
    run_one "$t" &
    pids+=($!)
    names+=("$t")
done
while [ ${#pids[@]} -gt 0 ]; do reap; done
exit $failed
