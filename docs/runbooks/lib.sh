# Helpers the runbooks' "Try it" blocks use (tests/runbooks.rs runs every block with them).
# HSM_SIGNER is the binary; WORK a scratch directory. Mainnet requests with synthetic slots, so
# the servers run with --no-slot-deadlines (a real signer keeps validity windows on).

GVR=0x4b363db94e286120d76eb905340fdd4e54bfe9f06bf33ff6cf5ad27f511bfe95

# root TAG: a 32-byte root made of one repeated byte (two hex digits).
root() { printf "0x"; for _ in $(seq 1 32); do printf '%s' "$1"; done; }

# att SOURCE TARGET TAG: an ATTESTATION request body (Fulu) voting SOURCE -> TARGET.
att() {
  printf '{"type":"ATTESTATION","fork_info":{"fork":{"previous_version":"0x05000000","current_version":"0x06000000","epoch":"411392"},"genesis_validators_root":"%s"},"attestation":{"slot":"%s","index":"0","beacon_block_root":"%s","source":{"epoch":"%s","root":"%s"},"target":{"epoch":"%s","root":"%s"}}}' \
    "$GVR" "$(( $2 * 32 ))" "$(root "$3")" "$1" "$(root "$3")" "$2" "$(root "$3")"
}

# serve DATA_DIR [ENV=VALUE…]: start a signer on a free loopback port; prints its base URL.
serve() {
  local dir=$1; shift
  env "$@" "$HSM_SIGNER" --data-dir "$dir" serve --listen 127.0.0.1:0 --no-slot-deadlines \
    > "$dir.out" 2> "$dir.log" &
  echo $! >> "$WORK/pids"
  for _ in $(seq 1 300); do
    local url
    url=$(sed -n 's/^hsm-signer listening on //p' "$dir.out")
    if [ -n "$url" ]; then echo "$url"; return 0; fi
    sleep 0.1
  done
  cat "$dir.log" >&2
  return 1
}

# stop_all: stop every signer `serve` started.
stop_all() {
  [ -f "$WORK/pids" ] || return 0
  while read -r pid; do kill "$pid" 2>/dev/null || true; done < "$WORK/pids"
  while read -r pid; do while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done; done < "$WORK/pids"
  rm -f "$WORK/pids"
}

# sign URL PUBKEY BODY: the HTTP status of a signing request.
sign() {
  curl -s -o /dev/null -w '%{http_code}' -H 'content-type: application/json' -d "$3" \
    "$1/api/v1/eth2/sign/$2"
}

# first_key DATA_DIR: the first key of a data directory.
first_key() { "$HSM_SIGNER" --data-dir "$1" keys list | awk '/^0x/ {print $1; exit}'; }

# expect WHAT WANT GOT: fail the runbook with WHAT unless GOT is WANT.
expect() { if [ "$3" != "$2" ]; then echo "FAILED: $1: expected $2, got $3" >&2; exit 1; fi; echo "ok: $1 ($3)"; }
