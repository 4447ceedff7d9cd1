#!/usr/bin/env bash
# Installs mlq's .deb into a real systemd (PID 1) booted in systemd-nspawn and
# runs the services there: the units load, verify and score, the broker and two
# trainers start, a job submitted with the installed `mlq` succeeds, a broker
# killed with SIGKILL is restarted and its running job still succeeds, a trainer
# that stops feeding its watchdog is killed and restarted. Run as root:
#   scripts/test-systemd-box.sh [BUILD_DIR]   (default: build-box in the repo)
#   scripts/test-systemd-box.sh --check       exit 0 if this machine can run it, else
#                                             77 with the reason (CI skips then)
# The box script: $SDBOX_TOOLS, else ../shared/tools/systemd-box.sh beside the
# repo (CI's copy), else /work/shared/tools/systemd-box.sh. The box persists in
# $SDBOX (default /tmp/sdbox-mlq); the first run debootstraps it (about a
# minute). Ends with "systemd-box: N passed, M failed"; exit 0 when M is 0.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
box_tools=${SDBOX_TOOLS:-}
if [ -z "$box_tools" ]; then
    for t in "$repo/../shared/tools/systemd-box.sh" /work/shared/tools/systemd-box.sh; do
        if [ -r "$t" ]; then box_tools=$t; break; fi
    done
fi

# What the box needs: root, the box script, and the cgroup v1+v2 hybrid layout
# the box script writes to (a non-systemd PID 1, as on the CI machines).
cannot_run() {
    [ "$(id -u)" = 0 ] || { echo "not root (systemd-nspawn needs root)"; return 0; }
    [ -n "$box_tools" ] && [ -r "$box_tools" ] ||
        { echo "no systemd-box.sh (set SDBOX_TOOLS or put shared/ beside the repo)"; return 0; }
    local h
    for h in unified systemd; do
        if ! mkdir -p "/sys/fs/cgroup/$h/sdbox-probe.$$" 2>/dev/null; then
            echo "cannot create cgroups under /sys/fs/cgroup/$h"
            return 0
        fi
        rmdir "/sys/fs/cgroup/$h/sdbox-probe.$$"
    done
    command -v systemd-nspawn >/dev/null || command -v apt-get >/dev/null ||
        { echo "no systemd-nspawn and no apt-get to install it"; return 0; }
    return 1
}
if [ "${1:-}" = --check ]; then
    if reason=$(cannot_run); then echo "test-systemd-box: cannot run here: $reason"; exit 77; fi
    echo "test-systemd-box: can run here ($box_tools)"
    exit 0
fi
if reason=$(cannot_run); then echo "test-systemd-box: $reason" >&2; exit 2; fi

build=${1:-$repo/build-box}
export SDBOX=${SDBOX:-${TMPDIR:-/tmp}/sdbox-mlq} SDNAME=${SDNAME:-mlqbox}
mkdir -p "$SDBOX"
# shellcheck source=/dev/null
source "$box_tools"
t_start=$SECONDS

passed=0 failed=0
check() { # check DESCRIPTION COMMAND...: runs COMMAND, reports, counts
    local what=$1; shift
    if "$@"; then
        echo "ok   $what"; passed=$((passed + 1))
    else
        echo "FAIL $what"; failed=$((failed + 1))
    fi
}
wait_for() { # wait_for SECONDS COMMAND...: polls COMMAND until it succeeds
    local t=$1; shift
    for _ in $(seq $((t * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
    return 1
}
prop() { sdbox_exec systemctl show -p "$2" --value "$1"; } # prop UNIT PROPERTY
state_is() { [ "$(prop "$1" ActiveState)" = "$2" ]; }
restarted() { # restarted UNIT OLD_NRESTARTS OLD_PID: restarted by systemd and up again
    [ "$(prop "$1" NRestarts)" -gt "$2" ] && state_is "$1" active &&
        [ "$(prop "$1" MainPID)" != "$3" ] && [ "$(prop "$1" MainPID)" != 0 ]
}
units="mlq-broker.service mlq-trainer@1.service mlq-trainer@2.service"

# 1. The package: only the programs, so that half-built benches cannot break it.
cmake -S "$repo" -B "$build" -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_SKIP_INSTALL_ALL_DEPENDENCY=ON >/dev/null
# Everything the package installs: the programs, libmlq, the man pages.
cmake --build "$build" -j"$(nproc)" >/dev/null
(cd "$build" && rm -f mlq_*.deb && cpack -G DEB >/dev/null)
deb=$(ls "$build"/mlq_*_amd64.deb)
echo "package: $deb ($((SECONDS - t_start)) s)"
# Debian's policy: every package ships its copyright file (MIT, from LICENSE).
dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/share/doc/mlq/copyright | grep -q "^License: Expat" ||
    { echo "test-systemd-box: FAIL: no /usr/share/doc/mlq/copyright in $deb" >&2; exit 1; }

# 2. The box, with the build dir bind-mounted read-only at /opt/mlq.
sdbox_build
wait_pid=
cleanup() { # leave the box with nothing enabled, then power it off
    if [ -n "$wait_pid" ]; then kill "$wait_pid" 2>/dev/null || true; fi
    sdbox_exec systemctl disable --now $units >/dev/null 2>&1 || true
    sdbox_down
}
trap cleanup EXIT
sdbox_boot --bind-ro="$build":/opt/mlq >/dev/null

# The box persists between runs: start from no mlq at all, not even its data.
sdbox_exec systemctl disable --now $units >/dev/null 2>&1 || true
sdbox_exec env DEBIAN_FRONTEND=noninteractive apt-get purge -y -q mlq >/dev/null 2>&1 || true
sdbox_exec sh -c 'rm -rf /var/lib/mlq /etc/mlq /run/systemd/system/mlq-*; userdel mlq; groupdel mlq; systemctl daemon-reload' >/dev/null 2>&1 || true
sdbox_exec apt-get update -q >/dev/null
sdbox_exec env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "/opt/mlq/$(basename "$deb")" >/dev/null
echo "box up, package installed ($((SECONDS - t_start)) s)"

installed() { sdbox_exec dpkg-query -W mlq >/dev/null; }
has_user() { sdbox_exec getent passwd mlq >/dev/null; }
owner_is_mlq() { [ "$(sdbox_exec stat -c %U /var/lib/mlq)" = mlq ]; }
not_enabled() { ! sdbox_exec systemctl is-enabled mlq-broker.service >/dev/null 2>&1; }
loaded() { [ "$(prop "$1" LoadState)" = loaded ]; }
check "package installed" installed
check "mlq user exists" has_user
check "/var/lib/mlq owned by mlq" owner_is_mlq
check "/etc/mlq/mlq.conf installed" sdbox_exec test -f /etc/mlq/mlq.conf
check "nothing enabled by the package" not_enabled
check "broker unit loaded" loaded mlq-broker.service
check "trainer@ unit loaded" loaded mlq-trainer@1.service

unit_files="/usr/lib/systemd/system/mlq-broker.service /usr/lib/systemd/system/mlq-trainer@.service"
verify_clean() { # no output at all, exit 0
    local out
    out=$(sdbox_exec systemd-analyze verify $unit_files 2>&1) || { printf '     %s\n' "$out"; return 1; }
    [ -z "$out" ] || { printf '     %s\n' "$out"; return 1; }
}
check "systemd-analyze verify: clean" verify_clean
for f in $unit_files; do
    score=$(sdbox_exec systemd-analyze security --offline=true --no-pager "$f" 2>/dev/null |
        awk '/Overall exposure/ {print $(NF-2)}')
    check "security --offline=true $(basename "$f"): $score <= 1.2" \
        awk -v s="$score" 'BEGIN { exit !(s != "" && s + 0 <= 1.2) }'
done
# The limits (docs/services.md, "Limits"): the trainers' resources, the
# broker's reachable addresses; a drop-in changes a trainer's.
prop_is() { # prop_is UNIT PROPERTY VALUE
    local v
    v=$(prop "$1" "$2")
    [ "$v" = "$3" ] || { echo "     $1 $2=$v, want $3"; return 1; }
}
trainer_limits() {
    prop_is mlq-trainer@1.service MemoryMax 2147483648 &&
        prop_is mlq-trainer@1.service TasksMax 256 &&
        prop_is mlq-trainer@1.service CPUQuotaPerSecUSec 4s
}
check "trainer@: MemoryMax=2G TasksMax=256 CPUQuota=400%" trainer_limits
broker_addresses() {
    local deny allow
    deny=$(prop mlq-broker.service IPAddressDeny) allow=$(prop mlq-broker.service IPAddressAllow)
    grep -q "0.0.0.0/0" <<<"$deny" && grep -q "::/0" <<<"$deny" &&
        grep -q "127.0.0.0/8" <<<"$allow" && grep -q "10.0.0.0/8" <<<"$allow" ||
        { echo "     IPAddressDeny=$deny IPAddressAllow=$allow"; return 1; }
}
check "broker: IPAddressDeny=any, IPAddressAllow=localhost and private networks" broker_addresses
limits_dropin() {
    sdbox_exec sh -c 'mkdir -p /run/systemd/system/mlq-trainer@2.service.d &&
        printf "[Service]\nMemoryMax=1G\nCPUQuota=100%%\n" \
            >/run/systemd/system/mlq-trainer@2.service.d/40-box-limits.conf &&
        systemctl daemon-reload' &&
        prop_is mlq-trainer@2.service MemoryMax 1073741824 &&
        prop_is mlq-trainer@2.service CPUQuotaPerSecUSec 1s &&
        prop_is mlq-trainer@1.service MemoryMax 2147483648
}
check "a drop-in sets trainer@2's MemoryMax=1G CPUQuota=100%, trainer@1 keeps its own" limits_dropin

# 3. The services for real. The box shares the host's network, where port 5555
# may be taken (an `mlq up` of the host's own): put a free port in the box's
# mlq.conf, which the broker, the trainers and `mlq` all read.
port=
for _ in $(seq 50); do
    p=$((20000 + RANDOM % 20000))
    if [ -z "$(ss -Htln "sport = :$p" 2>/dev/null)" ]; then port=$p; break; fi
done
sdbox_exec sh -c "printf '\n# test-systemd-box.sh\nbroker.bind = tcp://127.0.0.1:$port\nbroker.endpoint = tcp://127.0.0.1:$port\n' >>/etc/mlq/mlq.conf"
check "broker port $port in /etc/mlq/mlq.conf" [ "$(sdbox_exec mlq config broker.endpoint)" = "tcp://127.0.0.1:$port" ]

# Keys (docs/security.md): the package made the services' (the broker's, this
# host's trainers', accepted by the broker); root's mlq gets an admin key, with
# the broker's public key pinned next to it. `env -i` leaves mlq no $HOME, so
# the key is named in mlq.conf.
keys_made() {
    sdbox_exec sh -c 'test -f /etc/mlq/broker.key_secret && test -f /etc/mlq/trainer.key_secret &&
        test "$(stat -c %a:%G /etc/mlq/broker.key_secret)" = 640:mlq && ls /etc/mlq/trainers/*.key >/dev/null'
}
check "the package made the services' keys (0640, group mlq)" keys_made
admin_key() {
    sdbox_exec sh -c 'rm -f /root/box-admin.key /root/box-admin.key_secret /root/broker.key &&
        mlq keygen --name box-admin --out /root/box-admin >/dev/null &&
        mlq keys add /root/box-admin.key --role admin --users-dir /etc/mlq/users \
            --trainers-dir /etc/mlq/trainers >/dev/null &&
        cp /etc/mlq/broker.key /root/broker.key &&
        printf "client.secret_key = /root/box-admin.key_secret\n" >>/etc/mlq/mlq.conf'
}
check "root's key added as an admin (mlq keygen, mlq keys add)" admin_key
host=$(sdbox_exec cat /proc/sys/kernel/hostname)
sdbox_exec systemctl enable --now $units >/dev/null 2>&1 || true
for u in $units; do check "$u active (READY=1)" wait_for 30 state_is "$u" active; done
two_trainers() {
    local w
    w=$(sdbox_exec mlq workers) && printf '%s\n' "$w" | grep -q "^$host-1 " &&
        printf '%s\n' "$w" | grep -q "^$host-2 "
}
check "mlq workers: $host-1 and $host-2" wait_for 20 two_trainers
budget_fitted() { # where the box has a memory controller, trainer@2 fits its budget into 1G
    local has log
    has=$(sdbox_exec sh -c 'p=$(systemctl show -p ControlGroup --value mlq-trainer@2.service)
        test -f "/sys/fs/cgroup$p/memory.max" && echo yes' || true)
    if [ "$has" != yes ]; then echo "     (no memory controller in this box: not checked)"; return 0; fi
    log=$(sdbox_exec journalctl -q -u mlq-trainer@2.service -o cat --no-pager)
    grep -q "lowered to 768 MiB" <<<"$log"
}
check "trainer@2 fitted its memory budget into MemoryMax=1G" budget_fitted
# trainer@2 back to the unit's own limits for the jobs below.
sdbox_exec sh -c 'rm -f /run/systemd/system/mlq-trainer@2.service.d/40-box-limits.conf &&
    systemctl daemon-reload && systemctl restart mlq-trainer@2.service'
check "trainer@2 active again with the unit's limits" wait_for 30 state_is mlq-trainer@2.service active
check "mlq workers: both trainers back after trainer@2's restart" wait_for 20 two_trainers
whoami_admin() { sdbox_exec mlq whoami --json | grep -q '"role":"admin"'; }
check "mlq whoami: box-admin, an admin, over CURVE" whoami_admin
trainers_pinned() { sdbox_exec journalctl -u mlq-trainer@1 --no-pager | grep "pinned from /etc/mlq/broker.key" >/dev/null; } # not -q: journalctl would die of SIGPIPE under pipefail
check "the trainers pinned the broker's key" trainers_pinned
plaintext_refused() {
    local out rc=0
    out=$(sdbox_exec env MLQ_CONFIG=/dev/null MLQ_BROKER="tcp://127.0.0.1:$port" mlq queue 2>&1) || rc=$?
    # "requires keys" when the handshake's failure is seen in time, else the
    # timeout's "cannot reach": either way nothing was answered.
    [ "$rc" = 6 ] && grep -Eq "requires keys|cannot reach" <<<"$out"
}
check "a client without keys gets nothing" plaintext_refused

# A dataset in the services' data root (trainers may only read there): XOR
# quadrants of 40000 points, CSV from awk, imported by the installed mlq.
root=$(sdbox_exec env STATE_DIRECTORY=/var/lib/mlq mlq config data.root)
ds=$root/xor.h5
make_dataset() {
    sdbox_exec sh -c "awk 'BEGIN { srand(1); for (i = 0; i < 40000; i++) {
            x = rand() * 2 - 1; y = rand() * 2 - 1; printf \"%.4f,%.4f,%d\\n\", x, y, (x * y > 0) } }' >/tmp/xor.csv &&
        install -d -o mlq -g mlq -m 0750 '$root' &&
        mlq dataset import-csv /tmp/xor.csv --output '$ds' >/dev/null && chown mlq:mlq '$ds'"
}
check "dataset $ds (mlq dataset import-csv)" make_dataset

submit_small() {
    local out
    out=$(sdbox_exec timeout 60 mlq submit --dataset "$ds" --layers 2,16,2 --epochs 3 \
        --batch-size 32 --threads 1 --name box-small --wait 2>&1) || { printf '     %s\n' "$out"; return 1; }
    printf '%s\n' "$out" | tail -1 | grep -q succeeded
}
check "mlq submit --wait: a job succeeds" submit_small

# Predict with the run just trained: trainers may write to /var/lib/mlq/outputs
# only, the rest of the file system is read-only to them.
predict_small() {
    local run out
    run=$(sdbox_exec mlq runs --kind train --state succeeded --limit 1 --json 2>&1 |
          grep -o '"id": *[0-9]*' | head -n 1 | grep -o '[0-9]*$') ||
        { sdbox_exec mlq runs --kind train 2>&1 | sed 's/^/     /'; return 1; }
    out=$(sdbox_exec timeout 60 mlq predict "$run" --input "$ds" \
        --output /var/lib/mlq/outputs/box-pred.h5 --wait 2>&1) || { printf '     %s\n' "$out"; return 1; }
    sdbox_exec test -s /var/lib/mlq/outputs/box-pred.h5
}
check "mlq predict writes /var/lib/mlq/outputs/box-pred.h5" predict_small

# The broker dies (SIGKILL) while a job of ~10 s runs: systemd restarts it, the
# trainer reconnects and the job succeeds; `mlq wait` follows it across.
job=$(sdbox_exec mlq submit --dataset "$ds" --layers 2,512,512,2 --epochs 20 --batch-size 16 \
    --threads 1 --name box-long 2>/dev/null) || job=
job_running() { local q; [ -n "$job" ] && q=$(sdbox_exec mlq queue --json) && grep -Eq '"state": ?"running"' <<<"$q"; }
check "long job $job submitted and running" wait_for 20 job_running
# 180 s would do on an idle machine; a niced box beside other work needs more.
sdbox_exec timeout 400 mlq wait "$job" >"$SDBOX/wait.out" 2>&1 &
wait_pid=$!
sleep 2
n0=$(prop mlq-broker.service NRestarts) pid0=$(prop mlq-broker.service MainPID)
check "job $job still running when the broker is killed" job_running
sdbox_exec sh -c "kill -KILL $pid0"
check "broker restarted by systemd after kill -9 (NRestarts > $n0)" \
    wait_for 30 restarted mlq-broker.service "$n0" "$pid0"
waited_ok() { wait "$wait_pid" && grep -q "job $job succeeded" "$SDBOX/wait.out"; }
check "job $job succeeded across the broker's restart" waited_ok
wait_pid=
[ $failed = 0 ] || sed 's/^/     /' "$SDBOX/wait.out" | tail -5

# A trainer stops feeding its watchdog (SIGSTOP) under a 3 s WatchdogSec from
# a runtime drop-in: systemd aborts it (Result=watchdog) and restarts it.
sdbox_exec sh -c 'mkdir -p /run/systemd/system/mlq-trainer@2.service.d &&
    printf "[Service]\nWatchdogSec=3s\nTimeoutAbortSec=5s\n" \
        >/run/systemd/system/mlq-trainer@2.service.d/50-box-watchdog.conf &&
    systemctl daemon-reload && systemctl restart mlq-trainer@2.service'
check "trainer@2 active with WatchdogSec=3s" wait_for 20 state_is mlq-trainer@2.service active
n0=$(prop mlq-trainer@2.service NRestarts) pid0=$(prop mlq-trainer@2.service MainPID)
sdbox_exec sh -c "kill -STOP $pid0"
check "trainer@2 restarted by systemd after its watchdog starved (NRestarts > $n0)" \
    wait_for 30 restarted mlq-trainer@2.service "$n0" "$pid0"
watchdog_logged() {
    # Read the whole journal first: grep -q closing the pipe early would fail
    # journalctl with SIGPIPE under pipefail.
    local log
    log=$(sdbox_exec journalctl -q -u mlq-trainer@2.service -o cat --no-pager)
    grep -q "Failed with result 'watchdog'" <<<"$log"
}
check "journal: trainer@2 failed with result 'watchdog'" wait_for 10 watchdog_logged
sdbox_exec sh -c 'rm -rf /run/systemd/system/mlq-trainer@2.service.d && systemctl daemon-reload'
check "mlq workers: both trainers back" wait_for 20 two_trainers

if [ $failed != 0 ]; then
    echo "---- journal of the mlq units in the box (last 40 lines)"
    sdbox_exec journalctl -q -u mlq-broker.service -u 'mlq-trainer@*' -o short-monotonic --no-pager |
        tail -40 || true
fi
echo "systemd-box: $passed passed, $failed failed ($((SECONDS - t_start)) s)"
[ $failed = 0 ]
