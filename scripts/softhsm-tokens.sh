#!/usr/bin/env bash
# Create N SoftHSM tokens with random PINs (0600 files) under DIR and write an hsm-signer
# configuration that uses them, for operators who want tokens outside the embedded default.
#   scripts/softhsm-tokens.sh DIR [N]
# Then: hsm-signer --config DIR/hsm-signer.toml device init   (creates the custody keys)
set -euo pipefail
dir=${1:?usage: softhsm-tokens.sh DIR [N]}
n=${2:-3}
mkdir -p "$dir/tokens"
chmod 700 "$dir"
dir=$(cd "$dir" && pwd)
conf="$dir/softhsm2.conf"
[ -f "$conf" ] || printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' \
  "$dir/tokens" > "$conf"
export SOFTHSM2_CONF="$conf"
umask 077
cfg="$dir/hsm-signer.toml"
{
  echo "# Written by scripts/softhsm-tokens.sh"
  echo "default_device = \"softhsm-1\""
} > "$cfg"
for i in $(seq 1 "$n"); do
  label="hsm-signer-$i"
  pin="$dir/softhsm-$i.pin"
  so="$dir/softhsm-$i.so-pin"
  [ -f "$pin" ] || head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$pin"
  [ -f "$so" ] || head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$so"
  if softhsm2-util --show-slots | grep -q "Label:.*$label\s*$"; then
    echo "token $label exists"
  else
    softhsm2-util --init-token --free --label "$label" --pin "$(cat "$pin")" --so-pin "$(cat "$so")" >/dev/null
    echo "created token $label"
  fi
  cat >> "$cfg" <<TOML

[[device]]
name = "softhsm-$i"
profile = "softhsm"
token_label = "$label"
pin_file = "$pin"
module_config = "$conf"
TOML
done
echo "configuration: $cfg"
