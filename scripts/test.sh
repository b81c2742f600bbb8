#!/usr/bin/env bash
# The test command of the README: installs what is missing (SoftHSM2, PostgreSQL, nextest, Node
# and Lodestar for the devnet tests), then runs every test of the
# workspace under cargo-nextest (one process per test, which SoftHSM's process-global
# C_Initialize needs). Extra arguments go to nextest.
# Without extra arguments, a second pass runs the device layer, the HTTP signing path and the
# threshold tests again on kryoptic, the second PKCS#11 implementation (DESIGN §4; its module is
# built once by scripts/kryoptic.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
# The devnet tests' validator client: Node and Lodestar 1.5.1 into a cache folder (once; a few
# minutes the first time), so that the tests find it ready.
bash scripts/lodestar.sh >/dev/null
cargo nextest run --workspace --no-fail-fast "$@"
if [ $# -eq 0 ]; then
  module=$(bash scripts/kryoptic.sh)
  echo "== the same device and signing tests on kryoptic ($module)"
  HSM_SIGNER_TEST_PKCS11=kryoptic HSM_SIGNER_KRYOPTIC_MODULE="$module" \
    cargo nextest run --workspace --no-fail-fast -E \
    'binary_id(hsm::softhsm) | binary_id(hsm-signer::threshold_signing)
     | binary_id(hsm-signer::reload_devices) | binary_id(hsm-signer::distributed)
     | (binary_id(hsm-signer::api) & test(=every_oracle_case_signs_over_http_identically_to_the_oracle_and_to_blst))'
fi
