#!/usr/bin/env bash
# The README's first command: on a fresh machine, install what is missing, build, create three
# SoftHSM tokens (the embedded default), provision validators (an EIP-2335 keystore, whole keys,
# and a 2-of-3 threshold key across the three tokens), start the signer and use it over HTTP the
# way a validator client does: list keys, sign a block, an attestation and a selection proof,
# get a double vote refused, read /metrics. Then stop the server with SIGTERM and exit 0.
#   DATA_DIR=dir         keep the state there (default: a temporary directory, removed at exit);
#                        use a new one: the duties are for the current slot, and a second run in
#                        the same epoch would rightly be refused by slashing protection
#   HSM_SIGNER_BIN=path  use this binary instead of a release build (CI passes the one its
#                        tests just ran)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# One stream, so that commands, results and the signer's messages stay in order in any log.
exec 2>&1

step() { printf '\n== %s\n' "$*"; }
die() {
  echo "demo FAILED: $*" >&2
  exit 1
}

step "dependencies"
bash scripts/install-deps.sh
for tool in curl jq; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "installing $tool"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$tool" >/dev/null
  fi
done

if [ -n "${HSM_SIGNER_BIN:-}" ]; then
  bin=$HSM_SIGNER_BIN
  [ -x "$bin" ] || die "HSM_SIGNER_BIN=$bin is not an executable"
  step "binary: $bin"
else
  step "build (release)"
  cargo build --release --quiet --bin hsm-signer
  bin="${CARGO_TARGET_DIR:-$root/target}/release/hsm-signer"
fi

if [ -n "${DATA_DIR:-}" ]; then
  data=$DATA_DIR
  keep=true
else
  data=$(mktemp -d -t hsm-signer-demo.XXXXXX)
  keep=false
fi
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  $keep || rm -rf "$data"
}
trap cleanup EXIT
run() {
  echo "\$ hsm-signer $*" >&2
  "$bin" --data-dir "$data" "$@"
}

step "three SoftHSM tokens with custody keys, under $data"
run device init
run device check

step "validators: an EIP-2335 keystore, two generated keys, a 2-of-3 threshold key"
run keys import --keystore tests/fixtures/eip2335/keystore-pbkdf2.json \
  --password-file tests/fixtures/eip2335/password.txt --device softhsm-1
run keys generate --count 2 --device softhsm-2
threshold_pk=$(run keys generate --count 1 --threshold 2 \
  --devices softhsm-1,softhsm-2,softhsm-3 --share-ids 1,2,3 | tail -n 1)
echo "$threshold_pk"
run keys list
whole_pk=0x9612d7a727c9d0a22e185a1c768478dfe919cada9266988cb32359c11f2b7b27f4ae4040902382ae2910c15e2b420d07

step "serve (mainnet, slashing protection in SQLite, slot deadlines on)"
log="$data/server.log"
echo "\$ hsm-signer serve --listen 127.0.0.1:0"
"$bin" --data-dir "$data" serve --listen 127.0.0.1:0 >"$log.out" 2>"$log" &
server_pid=$!
base=""
for _ in $(seq 1 100); do
  base=$(sed -n 's/^hsm-signer listening on //p' "$log.out" 2>/dev/null | head -n 1)
  [ -n "$base" ] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$log" >&2; die "the server exited"; }
  sleep 0.1
done
[ -n "$base" ] || { cat "$log" >&2; die "the server did not start listening"; }
echo "listening on $base (pid $server_pid)"

step "GET /api/v1/eth2/publicKeys"
curl -fsS "$base/api/v1/eth2/publicKeys" | jq -r '.[]'

# Mainnet's genesis, fork schedule (Fulu since epoch 411392) and genesis validators root; duties
# are for the current slot, since the signer refuses a duty whose slot has passed.
genesis=1606824023
fork_info='{"fork":{"previous_version":"0x05000000","current_version":"0x06000000","epoch":"411392"},
  "genesis_validators_root":"0x4b363db94e286120d76eb905340fdd4e54bfe9f06bf33ff6cf5ad27f511bfe95"}'
# Start early in a slot, so that all four duties are in it (each takes milliseconds).
while [ $((($(date +%s) - genesis) % 12)) -ge 8 ]; do sleep 1; done
slot=$((($(date +%s) - genesis) / 12))
epoch=$((slot / 32))
root_a=0x$(printf 'aa%.0s' $(seq 32))
root_b=0x$(printf 'bb%.0s' $(seq 32))

# POST a signing request; print the status and the signature or message.
sign() {
  local pk=$1 body=$2 out status
  out=$(mktemp)
  status=$(curl -sS -o "$out" -w '%{http_code}' -H 'Content-Type: application/json' \
    -H 'Accept: application/json' --data "$body" "$base/api/v1/eth2/sign/$pk")
  echo "HTTP $status $(jq -c 'if .signature then .signature else . end' "$out")"
  rm -f "$out"
  last_status=$status
}
expect() { [ "$last_status" = "$1" ] || die "expected HTTP $1, got $last_status"; }

step "BLOCK_V2 (Fulu block header) at slot $slot, 2-of-3 key ${threshold_pk:0:18}…"
sign "$threshold_pk" "$(jq -nc --argjson f "$fork_info" --arg slot "$slot" --arg r "$root_a" \
  '{type:"BLOCK_V2", fork_info:$f, beacon_block:{version:"FULU", block_header:{slot:$slot,
    proposer_index:"7", parent_root:$r, state_root:$r, body_root:$r}}}')"
expect 200

attestation() {
  jq -nc --argjson f "$fork_info" --arg slot "$slot" --arg src "$((epoch - 1))" \
    --arg tgt "$epoch" --arg r "$1" \
    '{type:"ATTESTATION", fork_info:$f, attestation:{slot:$slot, index:"0",
      beacon_block_root:$r, source:{epoch:$src, root:$r}, target:{epoch:$tgt, root:$r}}}'
}
step "ATTESTATION source $((epoch - 1)) -> target $epoch, 2-of-3 key"
sign "$threshold_pk" "$(attestation "$root_a")"
expect 200

step "AGGREGATION_SLOT selection proof, imported key ${whole_pk:0:18}…"
sign "$whole_pk" "$(jq -nc --argjson f "$fork_info" --arg slot "$slot" \
  '{type:"AGGREGATION_SLOT", fork_info:$f, aggregation_slot:{slot:$slot}}')"
expect 200

step "a double vote (same target epoch $epoch, another root) is refused"
sign "$threshold_pk" "$(attestation "$root_b")"
expect 412

step "GET /metrics (a few lines)"
# Counts only (the histograms' buckets are many lines); awk reads to the end: no SIGPIPE.
curl -fsS "$base/metrics" |
  awk '/^signer_(signing_seconds_count|device_operation_seconds_count|slashing_refusals_total|http_responses_total)/'

step "stop: SIGTERM"
kill -TERM "$server_pid"
wait "$server_pid" || die "the server exited with status $?"
server_pid=""
echo "server stopped cleanly"
$keep && echo "state kept in $data"
step "demo done"
