#!/usr/bin/env bash
# Bash completion (scripts/mlq.bash-completion) of the built programs:
# commands, a command's flags, the daemons' flags; and the man pages made by
# help2man, where the build made them.
# usage: completion.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1
src=$2
export PATH=$build/cli:$build/broker:$build/trainer:$PATH
fail() { echo "completion: FAIL: $*" >&2; exit 1; }
complete_line() { # words... ; the last one is completed
    bash -c 'source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1));
             $(complete -p "$1" | sed "s/.*-F \([^ ]*\) .*/\1/"); printf "%s\n" "${COMPREPLY[@]}"' \
        _ "$src/scripts/mlq.bash-completion" "$@"
}
[ "$(complete_line mlq rep)" = report ] || fail "mlq rep: $(complete_line mlq rep)"
complete_line mlq '' | grep -x top >/dev/null || fail "mlq <tab> has no top"
[ "$(complete_line mlq report --out)" = --output ] || fail "mlq report --out: $(complete_line mlq report --out)"
complete_line mlq metrics --p | grep -x -- --plot >/dev/null || fail "mlq metrics --p"
complete_line mlq-broker --b | grep -x -- --bind >/dev/null || fail "mlq-broker --b"
complete_line mlq-trainer --stand | grep -x -- --standalone >/dev/null || fail "mlq-trainer --stand"
if [ -f "$build/man/mlq.1" ]; then
    for p in mlq mlq-broker mlq-trainer; do
        grep -q '^\.SH' "$build/man/$p.1" || fail "man page $p.1"
    done
    grep -q 'report' "$build/man/mlq.1" || fail "mlq.1 does not list report"
else
    echo "completion: no man pages in $build/man (help2man not installed at configure time)"
fi
echo "completion: ok"
