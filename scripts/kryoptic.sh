#!/usr/bin/env bash
# Build kryoptic's PKCS#11 module (libkryoptic_pkcs11.so) from crates.io, cache it, and print its
# path on stdout (progress goes to stderr). kryoptic is the second PKCS#11 implementation the
# device tests run against (DESIGN §4). It ships only as a cdylib crate, which `cargo install`
# cannot install, so: fetch the pinned crate through a throwaway project, then build the crate's
# own package with its published Cargo.lock, linking the system OpenSSL (`kryoptic-lib/dynamic`).
#   scripts/kryoptic.sh             build once, then print the cached path
# KRYOPTIC_CACHE overrides the cache directory. Idempotent; installs missing Debian packages
# (bindgen needs libclang-dev; OpenSSL and SQLite headers) with apt-get, using sudo when not root.
set -euo pipefail

version=1.5.4
cache=${KRYOPTIC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hsm-signer/kryoptic-$version}
so="$cache/libkryoptic_pkcs11.so"
if [ -f "$so" ]; then
  echo "$so"
  exit 0
fi
log() { echo "kryoptic.sh: $*" >&2; }

need=()
if command -v dpkg >/dev/null 2>&1; then
  for pkg in libclang-dev libssl-dev libsqlite3-dev pkg-config; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  done
else
  log "not a Debian system: make sure libclang, OpenSSL and SQLite headers and pkg-config exist"
fi
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  log "installing: ${need[*]}"
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >&2
fi

mkdir -p "$cache"
work=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Fetch the exact crate (and everything its lock file names) into cargo's registry cache.
mkdir -p "$work/fetch/src"
touch "$work/fetch/src/lib.rs"
cat > "$work/fetch/Cargo.toml" <<TOML
[package]
name = "kryoptic-fetch"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
kryoptic = { version = "=$version", default-features = false }
TOML
log "fetching kryoptic $version from crates.io"
cargo fetch --quiet --manifest-path "$work/fetch/Cargo.toml" >&2
src=$(cargo metadata --quiet --format-version 1 --manifest-path "$work/fetch/Cargo.toml" |
  grep -o "\"manifest_path\":\"[^\"]*/kryoptic-$version/Cargo.toml\"" | head -n1 |
  sed -e 's/^"manifest_path":"//' -e 's#/Cargo.toml"$##')
if [ -z "$src" ] || [ ! -f "$src/Cargo.lock" ]; then
  log "could not locate the unpacked kryoptic-$version crate (with its Cargo.lock)"
  exit 1
fi

# Build a copy: the registry's unpacked sources are cargo's, not ours to write into.
cp -r "$src" "$work/kryoptic"
log "building libkryoptic_pkcs11.so (release; a few minutes the first time)"
start=$(date +%s)
CARGO_TARGET_DIR="$work/target" cargo build --release --locked --quiet \
  --manifest-path "$work/kryoptic/Cargo.toml" \
  --no-default-features --features minimal,kryoptic-lib/dynamic >&2
cp "$work/target/release/libkryoptic_pkcs11.so" "$so.tmp"
mv "$so.tmp" "$so"
log "built in $(($(date +%s) - start)) s"
echo "$so"
