#!/usr/bin/env bash
# Regenerate tests/fixtures/deposit-cli-100-pbkdf2/: a `validator_keys/` directory produced
# by the official ethstaker deposit CLI (PyPI `ethstaker-deposit`, pinned below) for 100
# validators from a well-known TEST mnemonic, with pbkdf2 (EIP-2335) keystores, plus the
# files a test needs to check an import independently (pubkeys.txt, secret-0.txt,
# password.txt). TEST KEYS ONLY: the mnemonic is public.
#
# What runs:
#   python -m ethstaker_deposit --language English --non_interactive existing-mnemonic \
#     --mnemonic_language english --mnemonic "$MNEMONIC" --validator_start_index 0 \
#     --num_validators 100 --folder "$WORK/out" --chain mainnet \
#     --keystore_password "$PASSWORD" --withdrawal_address "$WITHDRAWAL" \
#     --regular_withdrawal --pbkdf2
#
# `--mnemonic_language` must come before `--mnemonic`: click runs option callbacks in
# command-line order, and the mnemonic's validation otherwise auto-detects the language,
# which opens all ten BIP-39 word lists.
#
# Two work-arounds, both needed because the ethstaker-deposit 1.3.1 wheel/sdist on PyPI
# ships without its package data (no `ethstaker_deposit/intl/**.json` message catalogs and
# no `key_handling/key_derivation/word_lists/*.txt` BIP-39 word lists); neither changes
# what is written to disk:
#   * The CLI looks resources up relative to the current directory (it is meant to run from
#     its source checkout). We run it from a scratch directory that holds only
#     ethstaker_deposit/key_handling/key_derivation/word_lists/english.txt, copied from the
#     PyPI `mnemonic` package (Trezor's BIP-39 reference implementation) and checked against
#     the canonical BIP-39 English list's SHA-256.
#   * Every user-facing message is looked up with `ethstaker_deposit.utils.intl.load_text`,
#     which raises when its catalog is missing (even option help texts, at import time).
#     A small launcher replaces that one function with a placeholder-text version before
#     the CLI is imported, and only when the catalog is absent. No other code is touched:
#     argument parsing, key derivation, keystore encryption, deposit data, file naming and
#     the CLI's own post-write verification (decrypt every keystore, verify deposit data)
#     run exactly as shipped.
#
# After the CLI, an independent check (verify step below) re-derives every secret key from
# the mnemonic twice -- with the package's own EIP-2333/2334 functions and with a separate
# hashlib-only EIP-2333 implementation -- computes the pubkeys with py_ecc, compares them
# with each keystore's `pubkey`, decrypts every keystore with hashlib PBKDF2 + pycryptodome
# AES-128-CTR, and recomputes every deposit_data entry's SSZ roots and checks its signature.
#
# Usage: scripts/oracle/gen_deposit_fixtures.sh
#   env: PYTHON (default python3, must be >=3.10), DEPOSIT_VENV (default /tmp/deposit-venv;
#        recreated from scratch), KEEP_VENV=1 to reuse an existing venv as is.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="$REPO_ROOT/tests/fixtures/deposit-cli-100-pbkdf2"
PYTHON="${PYTHON:-python3}"
VENV="${DEPOSIT_VENV:-/tmp/deposit-venv}"

# --- fixed TEST inputs (public; never use for real funds) -----------------------------
MNEMONIC="abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about"
PASSWORD="hsm-signer-test-password"
WITHDRAWAL="0x000000000000000000000000000000000000dEaD"   # burn address, EIP-55 checksummed
NUM=100
START=0
CHAIN=mainnet

# --- pinned tool versions --------------------------------------------------------------
DEPOSIT_VERSION=1.3.1
DEPOSIT_WHEEL_SHA256=508bb90c6d944cde5b12cd8bbff3c80f5683f4177b10a2bc2b47f8611c19c2ba
# BIP-39 English word list (bitcoin/bips bip-0039/english.txt)
BIP39_EN_SHA256=2f5eed53a4727b4bf8880d8f3f199efc90e58503646d9ff8eff3a2ed3b24dbda
PINS=(
  mnemonic==0.21
  annotated-types==0.8.0
  attrs==26.1.0
  click==8.5.1
  cytoolz==1.2.0
  eth-hash==0.8.0
  eth-typing==6.0.0
  eth-utils==6.0.0
  jsonschema==4.26.0
  jsonschema-specifications==2025.9.1
  lru-dict==1.4.1
  py-ecc==8.0.0
  pycryptodome==4.4.0
  pydantic==2.14.4
  pydantic_core==2.50.5
  pyperclip==1.11.0
  pyrsistent==0.20.0
  referencing==0.37.0
  rpds-py==2026.9.1
  ssz==0.6.0
  toolz==1.2.0
  typing-inspection==0.4.5
  typing_extensions==4.16.0
)

WORK="$(mktemp -d /tmp/gen-deposit-fixtures.XXXXXX)"
trap 'chmod -R u+w "$WORK" 2>/dev/null; rm -rf "$WORK"' EXIT

# --- venv ------------------------------------------------------------------------------
if [[ "${KEEP_VENV:-0}" != 1 || ! -x "$VENV/bin/python" ]]; then
  "$PYTHON" -m venv --clear "$VENV"
  "$VENV/bin/python" -m pip download -q --disable-pip-version-check \
    --no-deps -d "$WORK/dl" "ethstaker-deposit==$DEPOSIT_VERSION"
  WHEEL="$(ls "$WORK"/dl/ethstaker_deposit-"$DEPOSIT_VERSION"-*.whl)"
  echo "$DEPOSIT_WHEEL_SHA256  $WHEEL" | sha256sum -c --quiet -
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$WHEEL" "${PINS[@]}"
fi
PY="$VENV/bin/python"
"$PY" - "$DEPOSIT_VERSION" <<'EOF'
import sys
from importlib.metadata import version
assert version("ethstaker_deposit") == sys.argv[1], version("ethstaker_deposit")
EOF

# --- resource root for the CLI (see header) ------------------------------------------------
RES="$WORK/res"
WL="$RES/ethstaker_deposit/key_handling/key_derivation/word_lists"
mkdir -p "$WL" "$WORK/out"
SRC_WL="$("$PY" -c 'import mnemonic, os; print(os.path.join(os.path.dirname(mnemonic.__file__), "wordlist", "english.txt"))')"
cp "$SRC_WL" "$WL/english.txt"
echo "$BIP39_EN_SHA256  $WL/english.txt" | sha256sum -c --quiet -

cat >"$WORK/run_deposit_cli.py" <<'EOF'
"""Run the ethstaker deposit CLI exactly like `python -m ethstaker_deposit`, except that a
missing message catalog (not shipped in the PyPI wheel) yields placeholder text instead of
a KeyError. Messages only; nothing that is written to disk depends on them."""
import os
import sys

import ethstaker_deposit
from ethstaker_deposit.utils import intl

catalog = os.path.join(os.path.dirname(ethstaker_deposit.__file__), "intl", "en")
if not os.path.isdir(catalog) and not os.path.isdir(os.path.join("ethstaker_deposit", "intl", "en")):
    def load_text(params, file_path="", func="", lang=""):
        return "<" + ".".join([func or "?"] + [str(p) for p in params]) + ">"
    intl.load_text = load_text  # before any CLI module does `from ... import load_text`

from ethstaker_deposit.deposit import run  # noqa: E402

sys.argv[0] = "ethstaker_deposit"
run()
EOF

CLI_ARGS=(--language English --non_interactive existing-mnemonic
  --mnemonic_language english --mnemonic "$MNEMONIC"
  --validator_start_index "$START" --num_validators "$NUM"
  --folder "$WORK/out" --chain "$CHAIN"
  --keystore_password "$PASSWORD"
  --withdrawal_address "$WITHDRAWAL" --regular_withdrawal
  --pbkdf2)
(cd "$RES" && "$PY" "$WORK/run_deposit_cli.py" "${CLI_ARGS[@]}") >"$WORK/cli.log" 2>&1 || {
  cat "$WORK/cli.log" >&2; echo "deposit CLI failed" >&2; exit 1; }
grep -a "Error" "$WORK/cli.log" >&2 && { echo "deposit CLI reported an error" >&2; exit 1; }

# --- install into the fixture directory ------------------------------------------------
mkdir -p "$OUT"
if [[ -d "$OUT/validator_keys" ]]; then chmod -R u+w "$OUT/validator_keys"; rm -rf "$OUT/validator_keys"; fi
cp -r "$WORK/out/validator_keys" "$OUT/validator_keys"
chmod 755 "$OUT/validator_keys"
chmod 644 "$OUT"/validator_keys/*.json   # the CLI writes them 0400
printf '%s' "$PASSWORD" >"$OUT/password.txt"

# --- independent verification; writes pubkeys.txt and secret-0.txt -------------------
"$PY" - "$OUT" "$MNEMONIC" "$PASSWORD" "$WITHDRAWAL" "$NUM" "$START" <<'EOF'
import glob
import hashlib
import hmac
import json
import os
import re
import sys
import unicodedata

from Crypto.Cipher import AES
from py_ecc.bls import G2ProofOfPossession as bls

from ethstaker_deposit.key_handling.key_derivation.path import mnemonic_and_path_to_key

out, mnemonic, password, withdrawal, num, start = sys.argv[1:7]
num, start = int(num), int(start)
vk = os.path.join(out, "validator_keys")

# ---- hashlib-only EIP-2333 (independent of the package) ----
R = 0x73EDA753299D7D483339D80809A1D80553BDA402FFFE5BFEFFFFFFFF00000001
def hkdf_extract(salt, ikm): return hmac.new(salt, ikm, hashlib.sha256).digest()
def hkdf_expand(prk, info, length):
    okm, t, i = b"", b"", 1
    while len(okm) < length:
        t = hmac.new(prk, t + info + bytes([i]), hashlib.sha256).digest(); okm += t; i += 1
    return okm[:length]
def hkdf_mod_r(ikm, key_info=b""):
    salt, sk = b"BLS-SIG-KEYGEN-SALT-", 0
    while sk == 0:
        salt = hashlib.sha256(salt).digest()
        prk = hkdf_extract(salt, ikm + b"\x00")
        sk = int.from_bytes(hkdf_expand(prk, key_info + (48).to_bytes(2, "big"), 48), "big") % R
    return sk
def ikm_to_lamport_sk(ikm, salt):
    okm = hkdf_expand(hkdf_extract(salt, ikm), b"", 32 * 255)
    return [okm[i:i + 32] for i in range(0, len(okm), 32)]
def parent_sk_to_lamport_pk(parent, index):
    salt, ikm = index.to_bytes(4, "big"), parent.to_bytes(32, "big")
    l0 = ikm_to_lamport_sk(ikm, salt)
    l1 = ikm_to_lamport_sk(bytes(b ^ 0xFF for b in ikm), salt)
    return hashlib.sha256(b"".join(hashlib.sha256(x).digest() for x in l0 + l1)).digest()
def derive(mnemonic, path):
    seed = hashlib.pbkdf2_hmac("sha512", unicodedata.normalize("NFKD", mnemonic).encode(),
                               b"mnemonic", 2048, 64)
    sk = hkdf_mod_r(seed)
    for node in path.split("/")[1:]:
        sk = hkdf_mod_r(parent_sk_to_lamport_pk(sk, int(node)))
    return sk
# EIP-2333 test case 0 (seed given directly)
_seed = bytes.fromhex("c55257c360c07c72029aebc1b53c05ed0362ada38ead3e3e9efa3708e53495531f09a6987599d18264c1e1c92f2cf141630c7a3c4ab7c81b2f001698e7463b04")
_m = hkdf_mod_r(_seed)
assert _m == 6083874454709270928345386274498605044986640685124978867557563392430687146096
assert hkdf_mod_r(parent_sk_to_lamport_pk(_m, 0)) == 20397789859736650942317412262472558107875392172444076792671091975210932703118

# ---- SSZ roots for the deposit data (mainnet: genesis fork 0x00000000) ----
H = lambda b: hashlib.sha256(b).digest()
def chunks_root(data):
    data += b"\x00" * (-len(data) % 32)
    leaves = [data[i:i + 32] for i in range(0, len(data), 32)]
    while len(leaves) & (len(leaves) - 1): leaves.append(b"\x00" * 32)
    while len(leaves) > 1: leaves = [H(leaves[i] + leaves[i + 1]) for i in range(0, len(leaves), 2)]
    return leaves[0]
def container(*field_roots): return chunks_root(b"".join(field_roots))
u64 = lambda n: n.to_bytes(8, "little") + b"\x00" * 24
fork_version = bytes(4)
fork_data_root = container(fork_version + b"\x00" * 28, b"\x00" * 32)
domain = bytes.fromhex("03000000") + fork_data_root[:28]

files = sorted(glob.glob(os.path.join(vk, "keystore-*.json")))
deposit = glob.glob(os.path.join(vk, "deposit_data-*.json"))
others = set(os.listdir(vk)) - {os.path.basename(f) for f in files + deposit}
assert len(files) == num and len(deposit) == 1 and not others, (len(files), deposit, others)
by_index = {}
for f in files:
    m = re.fullmatch(r"keystore-m_12381_3600_(\d+)_0_0-(\d+)\.json", os.path.basename(f))
    assert m, f
    by_index[int(m.group(1))] = f
assert sorted(by_index) == list(range(start, start + num))

pubkeys, kdf_seen, secrets = [], set(), {}
for i in range(start, start + num):
    path = f"m/12381/3600/{i}/0/0"
    sk = mnemonic_and_path_to_key(mnemonic=mnemonic, path=path, password="")
    assert sk == derive(mnemonic, path), f"EIP-2333 mismatch at {i}"
    pk = bls.SkToPk(sk)
    ks = json.load(open(by_index[i]))
    assert ks["version"] == 4 and ks["path"] == path, (i, ks["path"])
    assert ks["pubkey"] == pk.hex(), f"pubkey mismatch at index {i}"
    kdf = ks["crypto"]["kdf"]
    assert kdf["function"] == "pbkdf2", kdf["function"]
    p = kdf["params"]
    assert p["prf"] == "hmac-sha256" and p["dklen"] == 32
    kdf_seen.add((p["c"], p["dklen"], p["prf"]))
    dk = hashlib.pbkdf2_hmac("sha256", unicodedata.normalize("NFKD", password).encode(),
                             bytes.fromhex(p["salt"]), p["c"], p["dklen"])
    ct = bytes.fromhex(ks["crypto"]["cipher"]["message"])
    assert ks["crypto"]["checksum"]["function"] == "sha256"
    assert H(dk[16:32] + ct).hex() == ks["crypto"]["checksum"]["message"], f"checksum {i}"
    assert ks["crypto"]["cipher"]["function"] == "aes-128-ctr"
    iv = bytes.fromhex(ks["crypto"]["cipher"]["params"]["iv"])
    plain = AES.new(dk[:16], AES.MODE_CTR, nonce=b"", initial_value=iv).decrypt(ct)
    assert int.from_bytes(plain, "big") == sk, f"decrypt mismatch at {i}"
    pubkeys.append("0x" + pk.hex())
    secrets[i] = sk
assert len(kdf_seen) == 1, kdf_seen

wc = bytes.fromhex("01") + bytes(11) + bytes.fromhex(withdrawal[2:])
dd = json.load(open(deposit[0]))
assert len(dd) == num
for i, d in zip(range(start, start + num), dd):
    pk = bytes.fromhex(d["pubkey"])
    assert "0x" + d["pubkey"] == pubkeys[i - start]
    assert d["withdrawal_credentials"] == wc.hex() and d["amount"] == 32 * 10**9
    assert d["network_name"] == "mainnet" and d["fork_version"] == "00000000"
    msg_root = container(chunks_root(pk), wc, u64(d["amount"]))
    assert msg_root.hex() == d["deposit_message_root"], f"deposit_message_root {i}"
    sig = bytes.fromhex(d["signature"])
    assert container(chunks_root(pk), wc, u64(d["amount"]), chunks_root(sig)).hex() == d["deposit_data_root"]
    assert bls.Verify(pk, container(msg_root, domain), sig), f"deposit signature {i}"

with open(os.path.join(out, "pubkeys.txt"), "w") as f:
    f.write("".join(p + "\n" for p in pubkeys))
with open(os.path.join(out, "secret-0.txt"), "w") as f:
    f.write("0x" + secrets[0].to_bytes(32, "big").hex())
c, dklen, prf = kdf_seen.pop()
print(f"OK: {num} pbkdf2 keystores (c={c}, dklen={dklen}, prf={prf}), pubkeys match, "
      f"all decrypt, deposit data verified; deposit_cli_version={dd[0]['deposit_cli_version']}")
EOF
