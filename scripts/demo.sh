#!/usr/bin/env bash
# The README's first command: on a fresh machine, install what is missing, build, and run the
# signer's custody path end to end on the embedded default (SoftHSM tokens created on first
# use under a data directory). DATA_DIR may be set to keep the state; otherwise a temporary one.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/install-deps.sh
cargo build --release --quiet
bin="$root/target/release/hsm-signer"
data=${DATA_DIR:-$(mktemp -d -t hsm-signer-demo.XXXXXX)}
run() { echo "+ hsm-signer $*"; "$bin" --data-dir "$data" "$@"; }

echo "== data directory: $data"
run device init
run device check
echo "== import the EIP-2335 test keystores (scrypt and pbkdf2: the same key)"
run keys import --keystore tests/fixtures/eip2335/keystore-scrypt.json \
  --password-file tests/fixtures/eip2335/password.txt
run keys import --keystore tests/fixtures/eip2335/keystore-pbkdf2.json \
  --password-file tests/fixtures/eip2335/password.txt --device softhsm-2
echo "== generate two more keys on the third token"
run keys generate --count 2 --device softhsm-3
run keys list
echo "== what custody costs: decrypt on the token + sign, against raw blst"
run bench custody --seconds 3
echo "== done; state kept in $data"
