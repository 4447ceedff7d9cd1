#!/usr/bin/env bash
# Installs mlq's .deb into a real systemd (PID 1) booted in systemd-nspawn and
# checks the units there. Run as root from anywhere:
#   scripts/test-systemd-box.sh [BUILD_DIR]     (default: build-box beside the repo's build dirs)
# Needs ../shared/tools/systemd-box.sh next to the repo (CI copies shared/ there).
# First run: about a minute to debootstrap the box. Exit 0 when every check passed.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$repo/build-box}
box_tools=${SDBOX_TOOLS:-$repo/../shared/tools/systemd-box.sh}
[ "$(id -u)" = 0 ] || { echo "test-systemd-box: run as root (systemd-nspawn)" >&2; exit 2; }
[ -r "$box_tools" ] || { echo "test-systemd-box: $box_tools not found" >&2; exit 2; }

export SDBOX=${SDBOX:-${TMPDIR:-/tmp}/sdbox-mlq} SDNAME=${SDNAME:-mlqbox}
mkdir -p "$SDBOX"
# shellcheck source=/dev/null
source "$box_tools"

failures=0
check() { # check DESCRIPTION COMMAND...: runs COMMAND, reports, counts failures
    local what=$1; shift
    if "$@"; then echo "ok   $what"; else echo "FAIL $what"; failures=$((failures + 1)); fi
}
wait_for() { # wait_for SECONDS COMMAND...: polls COMMAND until it succeeds
    local t=$1; shift
    for _ in $(seq $((t * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
    return 1
}
state_is() { sdbox_state "$1" | grep -q "ActiveState=$2"; }

# 1. The package.
cmake -S "$repo" -B "$build" -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$(nproc)"
(cd "$build" && rm -f mlq_*.deb && cpack -G DEB >/dev/null)
deb=$(ls "$build"/mlq_*_amd64.deb)
echo "package: $deb"

# 2. The box, with the build dir bind-mounted read-only at /opt/mlq.
sdbox_build
trap sdbox_down EXIT
sdbox_boot --bind-ro="$build":/opt/mlq

sdbox_exec apt-get update -q >/dev/null
# The box persists between runs: start from no mlq at all.
sdbox_exec env DEBIAN_FRONTEND=noninteractive apt-get purge -y -q mlq >/dev/null 2>&1 || true
sdbox_exec env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "/opt/mlq/$(basename "$deb")" >/dev/null
installed() { sdbox_exec dpkg-query -W mlq >/dev/null; }
check "package installed" installed
has_user() { sdbox_exec getent passwd mlq >/dev/null; }
check "mlq user exists" has_user
owner_is_mlq() { [ "$(sdbox_exec stat -c %U /var/lib/mlq)" = mlq ]; }
not_enabled() { ! sdbox_exec systemctl is-enabled mlq-broker.service >/dev/null 2>&1; }
loaded() { sdbox_exec systemctl show -p LoadState "$1" | grep -q LoadState=loaded; }
check "/var/lib/mlq owned by mlq" owner_is_mlq
check "/etc/mlq/mlq.conf installed" sdbox_exec test -f /etc/mlq/mlq.conf
check "nothing enabled by the package" not_enabled
check "broker unit loaded" loaded mlq-broker.service
check "trainer@ unit loaded" loaded mlq-trainer@1.service

units="/usr/lib/systemd/system/mlq-broker.service /usr/lib/systemd/system/mlq-trainer@.service"
have_broker=0
sdbox_exec test -x /usr/bin/mlq-broker && have_broker=1
if [ $have_broker = 1 ]; then
    check "systemd-analyze verify" sdbox_exec systemd-analyze verify $units
else
    # TODO(broker): drop this branch once mlq-broker is in the package. Until then
    # verify complains only that /usr/bin/mlq-broker is missing; check that.
    only_broker_missing() {
        local out
        out=$(sdbox_exec systemd-analyze verify $units 2>&1 || true)
        printf '%s\n' "$out" | sed 's/^/     /'
        ! printf '%s\n' "$out" | grep -v '/usr/bin/mlq-broker' | grep -q .
    }
    check "systemd-analyze verify (complains only of the missing mlq-broker)" only_broker_missing
fi
for u in mlq-broker.service mlq-trainer@1.service; do
    score=$(sdbox_exec systemd-analyze security "$u" 2>/dev/null | awk '/Overall exposure/ {print $(NF-2)}')
    check "security $u: $score <= 2.0" awk -v s="$score" 'BEGIN { exit !(s != "" && s <= 2.0) }'
done

# 3. The services for real: only once mlq-broker and `mlq submit` exist.
if [ $have_broker = 1 ] && sdbox_exec mlq submit --help >/dev/null 2>&1; then
    sdbox_exec systemctl enable --now mlq-broker.service mlq-trainer@1.service mlq-trainer@2.service
    check "broker active" wait_for 30 state_is mlq-broker.service active
    check "trainer@1 active" wait_for 30 state_is mlq-trainer@1.service active
    check "trainer@2 active" wait_for 30 state_is mlq-trainer@2.service active
    # TODO(integration): the job steps below need a small dataset in the box and
    # the exact `mlq submit`/`mlq wait` flags; fill them in when both exist:
    #  - copy a tiny HDF5 dataset into /var/lib/mlq/datasets, `mlq submit ... --wait`, expect exit 0;
    #  - queue a job, `kill -9` the broker's MainPID, see NRestarts go up and the job finish;
    #  - SIGSTOP a trainer's main process (it stops feeding WATCHDOG=1), see systemd
    #    kill it (Result=watchdog) and restart it.
    echo "TODO submit/kill/watchdog steps: see scripts/test-systemd-box.sh"
else
    echo "SKIP service run: mlq-broker or 'mlq submit' is not built yet (TODO in this script)"
fi

echo "$failures failure(s)"
[ $failures = 0 ]
