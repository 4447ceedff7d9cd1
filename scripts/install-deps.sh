#!/usr/bin/env bash
# Installs the Debian 12 packages mlq needs to build, test and run.
# Usage: scripts/install-deps.sh [--test] [--fuzz]   (--test adds what the tests use:
# h5py and numpy, to check an exported model without mlq, and chromium, to check mlq report
# in a real browser, and tmux, to check mlq top in a terminal, and pyzmq for the Python module;
# --bench adds PyTorch for bench/serve_bench.sh's peer and Optuna for bench/sweep_bench.sh's;
# --fuzz adds clang and its libFuzzer runtime, for scripts/fuzz.sh)
set -euo pipefail

build_pkgs=(build-essential cmake pkg-config
            libzmq3-dev libsqlite3-dev libopenblas-dev libhdf5-dev libcmocka-dev
            libjansson-dev zlib1g-dev libsystemd-dev liblzf-dev libssl-dev libxxhash-dev
            sqlite3 dataset-fashion-mnist fortunes)
for opt in "$@"; do
    case "$opt" in
    --test) build_pkgs+=(python3-h5py python3-numpy chromium tmux python3-zmq) ;;
    --bench) build_pkgs+=(python3-zmq python3-torch python3-numpy python3-optuna) ;;
    --fuzz) build_pkgs+=(clang libclang-rt-14-dev) ;;
    *) echo "install-deps: unknown option $opt (expected --test, --bench or --fuzz)" >&2; exit 2 ;;
    esac
done

missing=()
for p in "${build_pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
    sudo=sudo
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
