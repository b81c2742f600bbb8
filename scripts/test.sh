#!/usr/bin/env bash
# The test command of the README: installs what is missing, then runs every test of the
# workspace under cargo-nextest (one process per test, which SoftHSM's process-global
# C_Initialize needs). Extra arguments go to nextest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo nextest run --workspace --no-fail-fast "$@"
