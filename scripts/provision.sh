#!/usr/bin/env bash
# Provision a deposit-CLI validator_keys/ directory onto devices. With several devices the
# keystores are dealt round-robin, so load spreads across tokens.
#   scripts/provision.sh VALIDATOR_KEYS_DIR PASSWORD_FILE [DEVICE,DEVICE,...]
# hsm-signer options (--data-dir, --config) come from HSM_SIGNER_DATA_DIR / HSM_SIGNER_CONFIG;
# the binary is $HSM_SIGNER or target/release/hsm-signer.
set -euo pipefail
keys=${1:?usage: provision.sh VALIDATOR_KEYS_DIR PASSWORD_FILE [DEVICE,...]}
password=${2:?usage: provision.sh VALIDATOR_KEYS_DIR PASSWORD_FILE [DEVICE,...]}
devices=${3:-}
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${HSM_SIGNER:-$root/target/release/hsm-signer}
[ -x "$bin" ] || (cd "$root" && cargo build --release --quiet)

mapfile -t files < <(find "$keys" -maxdepth 1 -name 'keystore*.json' | sort)
[ ${#files[@]} -gt 0 ] || { echo "no keystore*.json in $keys" >&2; exit 1; }
if [ -z "$devices" ]; then
  "$bin" keys import --password-file "$password" --keystore "${files[@]}"
  exit 0
fi
IFS=, read -r -a devs <<< "$devices"
for d in "${!devs[@]}"; do
  batch=()
  for i in "${!files[@]}"; do
    if [ $((i % ${#devs[@]})) -eq "$d" ]; then batch+=("${files[$i]}"); fi
  done
  [ ${#batch[@]} -gt 0 ] || continue
  echo "== ${#batch[@]} keystores onto ${devs[$d]}"
  "$bin" keys import --device "${devs[$d]}" --password-file "$password" --keystore "${batch[@]}"
done
