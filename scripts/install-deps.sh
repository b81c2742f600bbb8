#!/usr/bin/env bash
# Install what hsm-signer needs to build, run and test on Debian/Ubuntu: SoftHSM2 (the default
# device), OpenSC's pkcs11-tool (handy for inspecting tokens), PostgreSQL (the tests start their
# own throwaway servers with its binaries), systemd-analyze and promtool (the operator's kit is
# checked with them), and cargo-nextest.
# Idempotent; uses sudo when not root.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

need=()
softhsm_present=false
for p in /usr/lib/softhsm/libsofthsm2.so /usr/lib/*/softhsm/libsofthsm2.so; do
  [ -f "$p" ] && softhsm_present=true
done
$softhsm_present || need+=(softhsm2)
command -v softhsm2-util >/dev/null 2>&1 || need+=(softhsm2)
command -v pkcs11-tool >/dev/null 2>&1 || need+=(opensc)
command -v cc >/dev/null 2>&1 || need+=(build-essential)
# The HTTPS tests' client speaks OpenSSL (native-tls), a second TLS stack beside the server's rustls.
[ -f /usr/include/openssl/ssl.h ] || need+=(libssl-dev)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
# iproute2: `ss`, with which the PostgreSQL test checks that the signer's session has TCP
# keepalives on; `ip` and `bridge`, with which the multi-host tests (tests/common/netns.rs, run
# as root) make network namespaces on a bridge and partition them. (A user's PATH may lack sbin.)
for tool in ss ip bridge; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || [ -x "/sbin/$tool" ] ||
    { need+=(iproute2); break; }
done
# The operator's kit is checked by the tools that consume it (tests/packaging.rs): systemd's
# `systemd-analyze verify` for the unit, Prometheus's `promtool check rules` for the alerts.
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
# The runbooks' commands (tests/runbooks.rs) talk to the signer with curl.
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
# Debian's package also starts a cluster service of its own on install: harmless, the tests run
# their own server (as the postgres user, on a free loopback port) and never touch it.
pg_present=false
for p in /usr/lib/postgresql/*/bin/initdb; do
  [ -x "$p" ] && pg_present=true
done
$pg_present || need+=(postgresql)

if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is missing: install Rust (https://rustup.rs) first" >&2
  exit 1
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest"
  cargo install --locked cargo-nextest
fi
echo "dependencies ready"
