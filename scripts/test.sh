#!/usr/bin/env bash
# Installs what is missing, builds mlq, and runs every test.
# Usage: scripts/test.sh [--sanitize]   (ASan + UBSan build in build-sanitize/)
set -euo pipefail
cd "$(dirname "$0")/.."

dir=build
flags=()
if [ "${1:-}" = "--sanitize" ]; then
    dir=build-sanitize
    flags=(-DMLQ_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug)
fi

scripts/install-deps.sh --test
cmake -S . -B "$dir" "${flags[@]}" >/dev/null
cmake --build "$dir" -j"$(nproc)"
cd "$dir"
ctest --output-on-failure -j"$(nproc)"
