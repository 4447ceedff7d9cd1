#!/usr/bin/env bash
# mlq report end to end: a real broker and two trainers train four runs of a
# small search (two optimizers, two learning rates, one run shorter) and
# evaluate the best; mlq report writes one HTML file, which headless Chromium
# opens: a script appended to a copy checks what the browser drew against the
# metrics in the database (every highlighted curve's points mapped back
# through its axes, axes, ticks and legends present, the best epoch marked
# where the database says, the confusion matrix's cells summing to the rows
# evaluated) and takes a screenshot. Exit 77 (skipped) only when no Chromium
# can start; everything before the browser has run by then.
# usage: report.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1
src=$2
. "$(dirname "$0")/lib.sh"
mlqt_init report "$build"

set +e
mlq report --output "$tmp/none.html" 2>"$tmp/err"
rc=$?
set -e
[ $rc = 6 ] || fail "report without a database: exit $rc, want 6"

mlqt_classes 11 900 1.2 "$tmp/data.h5"
mlqt_up 2

ids=()
for cfg in "adam 0.01 6" "adam 0.0005 6" "sgd 0.1 6" "sgd 0.01 3"; do
    set -- $cfg
    ids+=("$(mlq submit --dataset "$tmp/data.h5" --validation-split 0.2 --layers 4,16,3 \
        --optimizer "$1" --lr "$2" --epochs "$3" --batch-size 32 --name "$1-$2")")
done
for id in "${ids[@]}"; do mlq wait "$id" >/dev/null || fail "run $id: exit $?"; done
best=$(sqlite3 "$MLQ_DB" "SELECT run FROM final_metrics WHERE key = 'val_loss' ORDER BY value, run LIMIT 1")
eval_id=$(mlq eval "$best" --dataset "$tmp/data.h5")
mlq wait "$eval_id" >/dev/null || fail "eval failed"

# ---- the file ----
mlq report --output "$tmp/report.html" >"$tmp/out" || fail "report: exit $?"
grep -q "^wrote $tmp/report.html: 4 runs, 1 evaluation" "$tmp/out" || fail "report said: $(cat "$tmp/out")"
html=$tmp/report.html
# Self-contained: no script, nothing fetched (only the SVG namespace names a URL).
! grep -qiE '<script|<link|<img|<iframe|@import|src=' "$html" || fail "report loads or runs something"
[ "$(grep -oE 'https?://[^"]*' "$html" | sort -u)" = "http://www.w3.org/2000/svg" ] ||
    fail "report names a URL: $(grep -oE 'https?://[^"]*' "$html" | sort -u)"
for id in chart-loss chart-loss-log chart-accuracy parallel epochs-reached "confusion-$eval_id"; do
    grep -q "id=\"$id\"" "$html" || fail "report has no $id"
done
[ "$(grep -o '<tr data-run=' "$html" | wc -l)" = 4 ] || fail "ranking rows"
# Ranked by the final val_loss: the first row is the best run.
first=$(grep -o '<tr data-run="[0-9]*"' "$html" | head -n 1 | grep -o '[0-9]*')
[ "$first" = "$best" ] || fail "ranking starts with $first, want $best"
grep -q 'class="differs"><td class="mark">&#8800;</td><td>optimizer.lr' "$html" ||
    fail "parameters table does not mark optimizer.lr as differing"
grep -q '<tr><td class="mark"></td><td>batch_size' "$html" || fail "batch_size marked as differing"
# --json, --where, ids, bad input.
mlq report --where optimizer.name=sgd --json -o "$tmp/sgd.html" >"$tmp/sgd.json"
grep -q '"runs": 2' "$tmp/sgd.json" || fail "--where: $(cat "$tmp/sgd.json")"
mlq report "${ids[0]}" "$eval_id" --metric val_accuracy -o - | grep -q "confusion-$eval_id" ||
    fail "report of a run and its eval on stdout"
set +e
mlq report 999 -o "$tmp/x.html" 2>/dev/null; rc1=$?
mlq report "${ids[0]}" 2>/dev/null; rc2=$?
mlq report --metric no_such_metric -o "$tmp/x.html" 2>"$tmp/err"; rc3=$?
mlq report --where optimizer.name=rmsprop -o "$tmp/x.html" 2>/dev/null; rc4=$?
set -e
[ $rc1 = 5 ] || fail "report of a missing run: exit $rc1, want 5"
[ $rc2 = 2 ] || fail "report without --output: exit $rc2, want 2"
[ $rc3 = 2 ] && grep -q no_such_metric "$tmp/err" || fail "unknown --metric: exit $rc3"
[ $rc4 = 5 ] || fail "report matching nothing: exit $rc4, want 5"
[ ! -e "$tmp/x.html" ] || fail "a failed report left a file"

# ---- mlq logs: events and a line per epoch, as stored ----
mlq logs "$best" >"$tmp/logs"
[ "$(grep -cE "  epoch  [1-6]/6  .*train_loss [0-9.e-]+  .*val_loss [0-9.e-]+" "$tmp/logs")" = 6 ] ||
    fail "logs: $(cat "$tmp/logs")"
n_events=$(sqlite3 "$MLQ_DB" "SELECT count(*) FROM events WHERE run = $best")
[ "$(grep -cE '^[0-9-]+ [0-9:]+  (info|warn|error|note) ' "$tmp/logs")" = "$n_events" ] ||
    fail "logs: not the $n_events events"
mlq logs "$best" --follow >"$tmp/logs" || fail "logs --follow of a finished job: exit $?"
[ "$(tail -n 1 "$tmp/logs")" = "job $best succeeded" ] || fail "logs --follow: last line"
[ "$(mlq logs "$best" --json | grep -c '"type":"epoch"')" = 6 ] || fail "logs --json"

# ---- mlq metrics --plot: a line chart as wide as the terminal, the last epoch kept ----
COLUMNS=72 mlq metrics "$best" --plot --key val_loss >"$tmp/plot"
head -n 1 "$tmp/plot" | grep -q "^val_loss by epoch (6 points): last " ||
    fail "plot heading: $(head -n 1 "$tmp/plot")"
[ "$(grep -c '┤' "$tmp/plot")" = 3 ] || fail "plot: y axis labels"
grep -q '^ *└┬─*┬' "$tmp/plot" || fail "plot: x axis"
grep -qE '^ +1 .* 6$' "$tmp/plot" || fail "plot: the first and last epochs not labelled"
while IFS= read -r line; do
    [ "$(LC_ALL=C.UTF-8 bash -c 'l=$1; echo ${#l}' _ "$line")" -le 72 ] || fail "plot line wider than 72: $line"
done <"$tmp/plot"
set +e
mlq metrics "$best" --plot --json >/dev/null 2>&1; rc=$?
set -e
[ $rc = 2 ] || fail "metrics --plot --json: exit $rc, want 2"

# ---- in a browser ----
chromium=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$chromium" ]; then
    echo "report: SKIP the browser check: no chromium (Debian: apt-get install chromium)"
    exit 77
fi
chrome() {
    timeout 60 "$chromium" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage \
        --no-first-run --user-data-dir="$tmp/chrome" "$@" 2>>"$tmp/chrome.log"
}
if ! chrome --dump-dom "file://$html" >"$tmp/plain.dom" || ! grep -q "chart-loss" "$tmp/plain.dom"; then
    echo "report: SKIP the browser check: chromium does not start here: $(tail -n 3 "$tmp/chrome.log")"
    exit 77
fi
rows=$(sqlite3 "$MLQ_DB" "SELECT json_extract(result, '$.n') FROM jobs WHERE id = $eval_id")
[ "$rows" = 900 ] || fail "eval evaluated $rows rows"
{
    sed 's#</body></html>##' "$html"
    printf '<script>const EXPECTED = %s; const ROWS = %s;\n' \
        "$(sqlite3 -json "$MLQ_DB" "SELECT run, key, epoch, value FROM metrics ORDER BY run, key, step")" "$rows"
    cat "$src/tests/report_check.js"
    printf '</script></body></html>\n'
} >"$tmp/check.html"
chrome --dump-dom --virtual-time-budget=5000 "file://$tmp/check.html" >"$tmp/check.dom" ||
    fail "chromium on the report: exit $?: $(tail -n 5 "$tmp/chrome.log")"
result=$(grep -o '<pre id="mlq-check">[^<]*' "$tmp/check.dom" | tail -n 1 | sed 's/.*>//')
case "$result" in
PASS*) echo "report: browser: $result" ;;
*) fail "browser check: ${result:-no result (the check script did not run)}" ;;
esac
chrome --screenshot="$tmp/report.png" --window-size=1280,2200 --hide-scrollbars "file://$html" ||
    fail "screenshot: $(tail -n 5 "$tmp/chrome.log")"
size=$(stat -c %s "$tmp/report.png" 2>/dev/null || echo 0)
[ "$size" -gt 30000 ] || fail "screenshot of $size bytes: nothing drawn?"
[ -z "${MLQ_REPORT_KEEP:-}" ] || cp "$tmp/report.png" "$html" "$MLQ_REPORT_KEEP"/
echo "report: ok"
