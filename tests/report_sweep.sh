#!/usr/bin/env bash
# mlq report --sweep: a real broker and two trainers run an ASHA sweep of 8
# trials (learning rate log-uniform, optimizer a choice) on a small dataset;
# the report shows the sweep, its trials best first with their rungs, the
# rungs on every curve chart, the parallel coordinates of the two sampled
# fields, and how far the trials went; headless Chromium checks what it drew
# against the database (tests/report_check.js) and takes a screenshot
# (MLQ_REPORT_KEEP=DIR keeps it and the report: docs/report-sweep.png).
# usage: report_sweep.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1
src=$2
. "$(dirname "$0")/lib.sh"
mlqt_init report_sweep "$build"

mlqt_classes 3 1200 0.8 "$tmp/data.h5"
cat >"$tmp/spec.json" <<JSON
{"kind": "train", "dataset": "$tmp/data.h5", "validation_split": 0.25,
 "model": {"layers": [4, 32, 3]}, "optimizer": {"name": "sgd", "lr": 0.01},
 "batch_size": 32, "epochs": 16}
JSON
echo '{"optimizer.lr": {"loguniform": [0.0003, 0.3]}, "optimizer.name": {"choice": ["sgd", "adam"]}}' \
    >"$tmp/space.json"

mlqt_up 2
sid=$(mlq sweep "$tmp/spec.json" --space "$tmp/space.json" --trials 8 --scheduler asha \
          --metric val_loss --mode min --max-t 16 --grace-period 1 --reduction-factor 4 \
          --name lr-and-optimizer 2>/dev/null)
mlq sweep wait "$sid" >/dev/null || fail "sweep wait: exit $?"

html=$tmp/sweep.html
mlq report --sweep "$sid" --output "$html" >"$tmp/out" || fail "report --sweep: exit $?"
grep -q "^wrote $html: 8 runs" "$tmp/out" || fail "report said: $(cat "$tmp/out")"
grep -q "<title>sweep $sid: lr-and-optimizer</title>" "$html" || fail "title"
grep -q 'id="sweep"' "$html" || fail "no sweep section"
[ "$(grep -o '<table class="trials">' "$html" | wc -l)" = 1 ] || fail "no trials table"
[ "$(grep -o '<tr data-run="[0-9]*" data-state=' "$html" | wc -l)" = 8 ] || fail "trials rows"
stopped=$(sqlite3 "$MLQ_DB" "SELECT count(*) FROM jobs WHERE state = 'stopped'")
[ "$(grep -o 'data-state="stopped"' "$html" | wc -l)" = "$stopped" ] || fail "stopped trials"
grep -q 'class="parallel" id="parallel" data-lines="8" data-axes="3"' "$html" ||
    fail "parallel coordinates of the 2 sampled fields and the metric"
# ASHA's rungs below max_t 16 at grace 1, factor 4: epochs 1 and 4.
grep -q 'rungs at epoch 1, 4)' "$html" || fail "rungs"
best=$(sqlite3 "$MLQ_DB" "SELECT f.run FROM final_metrics f JOIN jobs j ON j.id = f.run
                          WHERE f.key = 'val_loss' ORDER BY f.value, f.run LIMIT 1")
first=$(grep -o '<tr data-run="[0-9]*"><td' "$html" | head -n 1 | grep -o '[0-9]*')
[ "$first" = "$best" ] || fail "ranking starts with $first, want $best"
set +e
mlq report --sweep 999 -o "$tmp/x.html" 2>/dev/null; rc1=$?
mlq report 1 --sweep "$sid" -o "$tmp/x.html" 2>/dev/null; rc2=$?
set -e
[ $rc1 = 5 ] || fail "report of a missing sweep: exit $rc1, want 5"
[ $rc2 = 2 ] || fail "ids and --sweep: exit $rc2, want 2"

chromium=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$chromium" ]; then
    echo "report_sweep: SKIP the browser check: no chromium (Debian: apt-get install chromium)"
    exit 77
fi
chrome() {
    timeout 60 "$chromium" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage \
        --no-first-run --user-data-dir="$tmp/chrome" "$@" 2>>"$tmp/chrome.log"
}
if ! chrome --dump-dom "file://$html" >"$tmp/plain.dom" || ! grep -q "chart-loss" "$tmp/plain.dom"; then
    echo "report_sweep: SKIP the browser check: chromium does not start here: $(tail -n 3 "$tmp/chrome.log")"
    exit 77
fi
{
    sed 's#</body></html>##' "$html"
    printf '<script>const EXPECTED = %s; const ROWS = null; const RUNGS = 2;\n' \
        "$(sqlite3 -json "$MLQ_DB" "SELECT run, key, epoch, value FROM metrics ORDER BY run, key, step")"
    cat "$src/tests/report_check.js"
    printf '</script></body></html>\n'
} >"$tmp/check.html"
chrome --dump-dom --virtual-time-budget=5000 "file://$tmp/check.html" >"$tmp/check.dom" ||
    fail "chromium: exit $?"
result=$(grep -o '<pre id="mlq-check">[^<]*' "$tmp/check.dom" | tail -n 1 | sed 's/.*>//')
case "$result" in
PASS*) echo "report_sweep: browser: $result" ;;
*) fail "browser check: ${result:-no result (the check script did not run)}" ;;
esac
chrome --screenshot="$tmp/report-sweep.png" --window-size=1280,2600 --hide-scrollbars "file://$html" ||
    fail "screenshot"
[ "$(stat -c %s "$tmp/report-sweep.png")" -gt 30000 ] || fail "screenshot: nothing drawn?"
[ -z "${MLQ_REPORT_KEEP:-}" ] || cp "$tmp/report-sweep.png" "$html" "$MLQ_REPORT_KEEP"/
echo "report_sweep: ok"
