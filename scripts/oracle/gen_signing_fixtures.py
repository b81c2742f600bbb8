#!/usr/bin/env python3
"""Generate Web3Signer eth2 signing fixtures with the consensus specs' own Python package.

For every fork (phase0 .. gloas) and every Web3Signer sign request type that applies to
that fork, this script builds random (seeded, deterministic) messages, computes the
signing root and the BLS signature with the executable consensus spec
(`eth-consensus-specs`, module `eth_consensus_specs`), and writes one JSON file per fork:
  --preset mainnet (default): mainnet preset and config, tests/fixtures/signing/<fork>.json;
  --preset minimal: minimal preset and config (its fork epochs, which the config leaves at
    FAR_FUTURE_EPOCH, replaced by MINIMAL_FORK_EPOCHS), tests/fixtures/signing/minimal/<fork>.json,
    and that network's config.yaml beside them.

The signatures are produced by the spec's own validator helpers where one exists
(get_attestation_signature, get_block_signature, get_epoch_signature, get_slot_signature,
get_aggregate_and_proof_signature, get_sync_committee_message,
get_sync_committee_selection_proof, get_contribution_and_proof_signature, and for gloas
get_execution_payload_bid_signature, get_execution_payload_envelope_signature,
get_payload_attestation_message_signature), using a
BeaconState whose `fork` and `genesis_validators_root` are taken from the request's
`fork_info` -- i.e. exactly the spec's `get_domain` rule:
    fork_version = fork.previous_version if epoch < fork.epoch else fork.current_version

Every signature is cross-checked against py_ecc (G2ProofOfPossession) at generation time,
and after writing, every fixture file is re-read and checked independently:
  * the request JSON is validated against the Web3Signer OpenAPI schema (if found),
  * the message is parsed back from the JSON into the spec's SSZ containers (strictly:
    exact field names, canonical decimal/hex encodings), the signing root is recomputed
    by a separate "signer emulation" dispatch that only looks at the request JSON,
  * the signature is verified with py_ecc against the fixed public key.
Any mismatch raises and the script exits non-zero.

Usage:
    python scripts/oracle/gen_signing_fixtures.py [--preset minimal]            # generate + self-check
    python scripts/oracle/gen_signing_fixtures.py [--preset minimal] --check    # only re-check existing files
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import sys
from importlib.metadata import version as pkg_version
from random import Random

from py_ecc.bls import G2ProofOfPossession as PyEccBLS
from ssz.bitfields import BitList, BitVector, ProgressiveBitList
from ssz.boolean import Boolean
from ssz.byte_arrays import ByteList, ByteVector
from ssz.collections import List, ProgressiveList, Vector
from ssz.container import Container, ProgressiveContainer
from ssz.uint import BaseUint, Uint8, Uint64

from eth_consensus_specs.debug.random_value import RandomizationMode, get_random_ssz_object
from eth_consensus_specs.utils import bls as spec_bls

# --------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------

FORKS = ["phase0", "altair", "bellatrix", "capella", "deneb", "electra", "fulu", "gloas"]
PRESETS = ["mainnet", "minimal"]

# The preset being generated or checked, and its spec modules; set by use_preset().
PRESET = "mainnet"
SPECS: dict = {}

# The minimal config schedules no fork (every *_FORK_EPOCH is FAR_FUTURE_EPOCH): a devnet sets
# its own. These are the fixtures' devnet; config.yaml beside the fixtures says the same.
MINIMAL_FORK_EPOCHS = {
    "altair": 10,
    "bellatrix": 20,
    "capella": 30,
    "deneb": 40,
    "electra": 50,
    "fulu": 60,
    "gloas": 70,
}

# Forks the mainnet config does not schedule (its *_FORK_EPOCH is FAR_FUTURE_EPOCH): gloas is
# not scheduled on mainnet; the epoch is the fixtures' choice.
MAINNET_FIXTURE_FORK_EPOCHS = {
    "gloas": 450000,
}

# A fork's "after fork" epochs are drawn from [its epoch, the next fork's epoch), or, for the
# last fork, [its epoch, its epoch + 100000). Fulu's files were made when it was the last fork;
# it keeps that open range so they stay the same bytes.
OPEN_AFTER_RANGE = {"fulu"}


def use_preset(preset: str) -> None:
    global PRESET, SPECS
    PRESET = preset
    SPECS = {f: importlib.import_module(f"eth_consensus_specs.{f}.{preset}") for f in FORKS}

# EIP-2335 test vector secret key.
SECRET_KEY_HEX = "0x000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f"
SECRET_KEY = int(SECRET_KEY_HEX, 16)

# Builder API (ethereum/builder-specs, specs/bellatrix/builder.md):
#   DOMAIN_APPLICATION_BUILDER = DomainType('0x00000001')
#   domain = compute_domain(DOMAIN_APPLICATION_BUILDER)  # GENESIS_FORK_VERSION, zero root
DOMAIN_APPLICATION_BUILDER_HEX = "0x00000001"

# Fork names as used by the Web3Signer API `version` discriminators.
VERSION_NAME = {f: f.upper() for f in FORKS}

# Types whose request carries no fork_info (DepositSigning / ValidatorRegistrationSigning
# do not include the `Signing` base schema; nor does Remote Signing API v1.4.0's
# BuilderRequestAuthSigning).
NO_FORK_INFO_TYPES = {"DEPOSIT", "VALIDATOR_REGISTRATION", "BUILDER_REQUEST_AUTH"}

# BUILDER_REQUEST_AUTH (Remote Signing API v1.4.0, BuilderRequestAuthGloas): the builder
# domain type with the application mask, DomainType('0x0B000001'), GENESIS_FORK_VERSION and a
# zero root, like VALIDATOR_REGISTRATION's builder domain.
DOMAIN_BUILDER_REQUEST_AUTH_HEX = "0x0B000001"

# Types new in gloas, each `{version: "GLOAS", data: <message>}` under its body key.
GLOAS_TYPES = {
    "EXECUTION_PAYLOAD_BID": "execution_payload_bid",
    "EXECUTION_PAYLOAD_ENVELOPE": "execution_payload_envelope",
    "PAYLOAD_ATTESTATION_MESSAGE": "payload_attestation_message",
    "PROPOSER_PREFERENCES": "proposer_preferences",
    "BUILDER_REQUEST_AUTH": "builder_request_auth",
}

CASES_PER_TYPE = 3

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIXTURES = os.path.join(REPO_ROOT, "tests", "fixtures", "signing")
DEFAULT_OUT = {"mainnet": FIXTURES, "minimal": os.path.join(FIXTURES, "minimal")}
DEFAULT_SPEC_DIR = os.path.join(
    REPO_ROOT, "..", "shared", "specs", "web3signer-eth2", "signing"
)


def types_for_fork(fork: str) -> list[str]:
    i = FORKS.index(fork)
    altair_plus = i >= FORKS.index("altair")
    bellatrix_plus = i >= FORKS.index("bellatrix")
    pre_electra = i < FORKS.index("electra")
    types = ["AGGREGATION_SLOT"]
    if pre_electra:
        types.append("AGGREGATE_AND_PROOF")
    types += ["AGGREGATE_AND_PROOF_V2", "ATTESTATION"]
    if fork == "phase0":
        types.append("BLOCK")
    types += ["BLOCK_V2", "DEPOSIT", "RANDAO_REVEAL", "VOLUNTARY_EXIT"]
    if altair_plus:
        types += [
            "SYNC_COMMITTEE_MESSAGE",
            "SYNC_COMMITTEE_SELECTION_PROOF",
            "SYNC_COMMITTEE_CONTRIBUTION_AND_PROOF",
        ]
    if bellatrix_plus:
        types.append("VALIDATOR_REGISTRATION")
    if since(fork, "gloas"):
        types += list(GLOAS_TYPES)
    return types


def since(fork: str, first: str) -> bool:
    return FORKS.index(fork) >= FORKS.index(first)


def fork_version(fork: str):
    cfg = SPECS[FORKS[-1]].config
    if fork == "phase0":
        return cfg.GENESIS_FORK_VERSION
    return getattr(cfg, f"{fork.upper()}_FORK_VERSION")


def fork_epoch(fork: str) -> int:
    cfg = SPECS[FORKS[-1]].config
    if fork == "phase0":
        return 0
    if PRESET == "minimal":
        return MINIMAL_FORK_EPOCHS[fork]
    if fork in MAINNET_FIXTURE_FORK_EPOCHS:
        return MAINNET_FIXTURE_FORK_EPOCHS[fork]
    return int(getattr(cfg, f"{fork.upper()}_FORK_EPOCH"))


def fixture_config(spec):
    """The spec module's config with the fixtures' fork schedule (fork_epoch), in place of the
    FAR_FUTURE_EPOCHs of the forks the config does not schedule."""
    return spec.config._replace(
        **{f"{f.upper()}_FORK_EPOCH": spec.Epoch(fork_epoch(f)) for f in FORKS if f != "phase0"}
    )


def fixture_compute_fork_version(spec, epoch: int):
    """The spec's compute_fork_version(epoch) under the fixtures' fork schedule."""
    saved = spec.config
    spec.config = fixture_config(spec)
    try:
        return spec.compute_fork_version(spec.Epoch(epoch))
    finally:
        spec.config = saved


def seed(fork: str, rtype: str) -> str:
    # The mainnet seeds predate the presets; keep them so its fixtures stay the same bytes.
    return f"hsm-signer/{fork}/{rtype}" if PRESET == "mainnet" else f"hsm-signer/{PRESET}/{fork}/{rtype}"


def versions_string() -> str:
    return (
        f"eth-consensus-specs {pkg_version('eth-consensus-specs')}, "
        f"py_ecc {pkg_version('py_ecc')}, "
        f"py_arkworks_bls12381 {pkg_version('py_arkworks_bls12381')}"
    )


def hx(b) -> str:
    return "0x" + bytes(b).hex()


# --------------------------------------------------------------------------------------
# Beacon-API style JSON encoding / strict decoding of SSZ values
# --------------------------------------------------------------------------------------


def is_progressive_bytes(typ) -> bool:
    """EIP-7916 ProgressiveByteList, which eth-ssz spells ProgressiveList[Byte] (gloas'
    Transaction and BlockAccessList): bytes, so 0x hex like a ByteList."""
    return isinstance(typ, type) and issubclass(typ, ProgressiveList) and typ.ELEMENT_TYPE is Uint8


def to_json(v):
    # Bitlists, progressive bitlists and bitvectors: 0x hex of their SSZ serialization (a
    # bitlist's and a progressive bitlist's are the same bytes, delimiter bit included).
    if isinstance(v, (BitList, ProgressiveBitList, BitVector)):
        return "0x" + v.encode_bytes().hex()
    if isinstance(v, (ByteVector, ByteList)) or is_progressive_bytes(type(v)):
        return "0x" + v.encode_bytes().hex()
    if isinstance(v, Boolean):
        return bool(v)
    if isinstance(v, BaseUint):  # uint8 .. uint256
        return str(int(v))
    if isinstance(v, (List, ProgressiveList, Vector)):
        return [to_json(e) for e in v]
    if isinstance(v, (Container, ProgressiveContainer)):
        return {name: to_json(getattr(v, name)) for name in type(v).model_fields}
    raise TypeError(f"cannot encode {type(v)}")


HEX_RE = re.compile(r"^0x([0-9a-f]{2})*$")
UINT_RE = re.compile(r"^(0|[1-9][0-9]*)$")


class FixtureError(Exception):
    pass


def _hex_bytes(j, path) -> bytes:
    if not isinstance(j, str) or not HEX_RE.match(j):
        raise FixtureError(f"{path}: expected 0x-prefixed lowercase hex, got {j!r}")
    return bytes.fromhex(j[2:])


def from_json(typ, j, path="$"):
    """Strictly parse Beacon-API JSON `j` into SSZ type `typ`."""
    if issubclass(typ, (BitList, ProgressiveBitList, BitVector)):
        return typ.decode_bytes(_hex_bytes(j, path))
    if is_progressive_bytes(typ):
        return typ.decode_bytes(_hex_bytes(j, path))
    if issubclass(typ, ByteVector):
        b = _hex_bytes(j, path)
        if len(b) != typ.get_byte_length():
            raise FixtureError(f"{path}: expected {typ.get_byte_length()} bytes, got {len(b)}")
        return typ.decode_bytes(b)
    if issubclass(typ, ByteList):
        return typ.decode_bytes(_hex_bytes(j, path))
    if issubclass(typ, Boolean):
        if not isinstance(j, bool):
            raise FixtureError(f"{path}: expected bool")
        return typ(j)
    if issubclass(typ, BaseUint):
        if not isinstance(j, str) or not UINT_RE.match(j):
            raise FixtureError(f"{path}: expected decimal string, got {j!r}")
        n = int(j)
        if n >= 1 << (8 * typ.get_byte_length()):
            raise FixtureError(f"{path}: {n} out of range for {typ.__name__}")
        return typ(n)
    if issubclass(typ, (List, ProgressiveList, Vector)):
        if not isinstance(j, list):
            raise FixtureError(f"{path}: expected array")
        return typ(data=[from_json(typ.ELEMENT_TYPE, e, f"{path}[{i}]") for i, e in enumerate(j)])
    if issubclass(typ, (Container, ProgressiveContainer)):
        if not isinstance(j, dict):
            raise FixtureError(f"{path}: expected object")
        fields = typ.model_fields
        if set(j) != set(fields):
            raise FixtureError(
                f"{path}: keys {sorted(j)} != {typ.__name__} fields {list(fields)}"
            )
        return typ(**{n: from_json(f.annotation, j[n], f"{path}.{n}") for n, f in fields.items()})
    raise FixtureError(f"{path}: unsupported type {typ}")


def fresh(obj):
    """Re-materialise an SSZ object from its serialization (no stale state after edits)."""
    return type(obj).decode_bytes(obj.encode_bytes())


# --------------------------------------------------------------------------------------
# Generation helpers
# --------------------------------------------------------------------------------------


def rand_obj(rng: Random, typ, max_list=2, max_bytes=32):
    return get_random_ssz_object(
        rng, typ, max_bytes, max_list, RandomizationMode.mode_random, chaos=False
    )


def rand_bits(rng: Random, typ, length: int):
    return typ(data=[rng.random() < 0.5 for _ in range(length)])


def rand_root(rng: Random) -> bytes:
    return bytes(rng.getrandbits(8) for _ in range(32))


def rand_sig_bytes(rng: Random) -> bytes:
    return bytes(rng.getrandbits(8) for _ in range(96))


class Ctx:
    """Per (fork, type) generation context."""

    def __init__(self, fork: str, rtype: str):
        self.fork = fork
        self.rtype = rtype
        self.spec = SPECS[fork]
        self.rng = Random(seed(fork, rtype))
        i = FORKS.index(fork)
        self.E = fork_epoch(fork)
        self.prev_fork = FORKS[i - 1] if i > 0 else None
        self.prev_E = fork_epoch(self.prev_fork) if self.prev_fork else None
        last = i + 1 == len(FORKS) or fork in OPEN_AFTER_RANGE
        self.next_E = self.E + 100_000 if last else fork_epoch(FORKS[i + 1])
        self.spe = int(self.spec.SLOTS_PER_EPOCH)
        self.count = 0  # cases built so far, for builders that cycle through variants

    # ---- fork info -------------------------------------------------------------------
    def fork_info(self, fork_override: str | None = None):
        f = fork_override or self.fork
        i = FORKS.index(f)
        cur = fork_version(f)
        prev = fork_version(FORKS[i - 1]) if i > 0 else cur
        fork_obj = self.spec.Fork(
            previous_version=prev, current_version=cur, epoch=self.spec.Epoch(fork_epoch(f))
        )
        gvr = self.spec.Root(rand_root(self.rng))
        return fork_obj, gvr

    def state(self, fork_obj, gvr, slot=0):
        st = self.spec.BeaconState()
        st.fork = fork_obj
        st.genesis_validators_root = gvr
        st.slot = self.spec.Slot(slot)
        return st

    # ---- epoch / slot choice -----------------------------------------------------------
    def pick(self, mode: str) -> tuple[int, int]:
        """Return (epoch, slot) for a case mode: after | before | at_fork | last_before."""
        rng = self.rng
        if mode == "after":
            e = rng.randint(self.E, self.next_E - 1)
            return e, e * self.spe + rng.randint(0, self.spe - 1)
        if mode == "at_fork":
            return self.E, self.E * self.spe
        if mode == "before":
            assert self.E > 0
            e = rng.randint(self.prev_E, self.E - 1)
            return e, e * self.spe + rng.randint(0, self.spe - 1)
        if mode == "last_before":
            assert self.E > 0
            return self.E - 1, self.E * self.spe - 1
        raise ValueError(mode)

    def modes(self) -> list[str]:
        if self.fork == "phase0":
            # Mainnet phase0 fork: previous_version == current_version, epoch 0:
            # no message epoch can precede it.
            return ["after", "after", "at_fork"]
        return ["after", "before", "at_fork"]


def check_sig(ctx: Ctx, obj, domain, spec_sig) -> tuple[bytes, bytes]:
    """Bind the spec helper's signature to our own compute_signing_root(obj, domain)."""
    spec = ctx.spec
    root = bytes(spec.compute_signing_root(obj, domain))
    spec_sig = bytes(spec_sig)
    py_sig = PyEccBLS.Sign(SECRET_KEY, root)
    if py_sig != spec_sig:
        raise FixtureError(
            f"{ctx.fork}/{ctx.rtype}: spec signature != py_ecc Sign(sk, signing_root) -- "
            "spec helper used a different signing root than the one recorded"
        )
    return root, spec_sig


# --------------------------------------------------------------------------------------
# Per-type case builders. Each returns (payload_dict, obj, domain, spec_signature).
# --------------------------------------------------------------------------------------


def _attestation_data(ctx: Ctx, slot: int, target_epoch: int):
    spec, rng = ctx.spec, ctx.rng
    ad = rand_obj(rng, spec.AttestationData)
    ad.slot = spec.Slot(slot)
    last_committee = int(spec.MAX_COMMITTEES_PER_SLOT) - 1
    if since(ctx.fork, "gloas"):
        # Gloas: `index` is the payload-status bit (0: payload not present, 1: present).
        ad.index = spec.CommitteeIndex(rng.randint(0, 1))
    else:
        ad.index = spec.CommitteeIndex(0 if FORKS.index(ctx.fork) >= FORKS.index("electra") else rng.randint(0, last_committee))
    ad.target.epoch = spec.Epoch(target_epoch)
    ad.source.epoch = spec.Epoch(max(0, target_epoch - rng.randint(1, 2)))
    return fresh(ad)


def build_attestation(ctx: Ctx, fork_obj, gvr, slot, epoch, target_epoch=None):
    spec = ctx.spec
    ad = _attestation_data(ctx, slot, epoch if target_epoch is None else target_epoch)
    st = ctx.state(fork_obj, gvr)
    sig = spec.get_attestation_signature(st, ad, SECRET_KEY)
    domain = spec.get_domain(st, spec.DOMAIN_BEACON_ATTESTER, ad.target.epoch)
    return {"attestation": to_json(ad)}, ad, domain, sig


def build_aggregation_slot(ctx: Ctx, fork_obj, gvr, slot, epoch):
    spec = ctx.spec
    st = ctx.state(fork_obj, gvr)
    s = spec.Slot(slot)
    sig = spec.get_slot_signature(st, s, SECRET_KEY)
    domain = spec.get_domain(st, spec.DOMAIN_SELECTION_PROOF, spec.compute_epoch_at_slot(s))
    return {"aggregation_slot": {"slot": str(slot)}}, s, domain, sig


def _aggregate_and_proof(ctx: Ctx, fork_obj, gvr, slot, target_epoch, one_committee=True, full_bits=False):
    spec, rng = ctx.spec, ctx.rng
    electra_plus = FORKS.index(ctx.fork) >= FORKS.index("electra")
    st = ctx.state(fork_obj, gvr)
    aap = rand_obj(rng, spec.AggregateAndProof)
    agg = aap.aggregate
    agg.data = _attestation_data(ctx, slot, target_epoch)
    agg.signature = spec.BLSSignature(rand_sig_bytes(rng))
    if full_bits:
        # Every bit the preset allows: MAX_VALIDATORS_PER_COMMITTEE (* MAX_COMMITTEES_PER_SLOT).
        limit = int(spec.MAX_VALIDATORS_PER_COMMITTEE)
        if electra_plus:
            limit *= int(spec.MAX_COMMITTEES_PER_SLOT)
            agg.committee_bits = spec.CommitteeBits(data=[True] * int(spec.MAX_COMMITTEES_PER_SLOT))
        agg.aggregation_bits = spec.AggregationBits(data=[True] * limit)
    elif electra_plus:
        agg.aggregation_bits = rand_bits(rng, spec.AggregationBits, rng.randint(1, 1500))
        if one_committee:
            bits = [False] * int(spec.MAX_COMMITTEES_PER_SLOT)
            bits[rng.randint(0, len(bits) - 1)] = True
            agg.committee_bits = spec.CommitteeBits(data=bits)
    else:
        agg.aggregation_bits = rand_bits(rng, spec.AggregationBits, rng.randint(1, 600))
    # A real selection proof for the slot (only hashed by the signer, but realistic).
    aap.selection_proof = spec.get_slot_signature(st, spec.Slot(slot), SECRET_KEY)
    aap = fresh(aap)
    sig = spec.get_aggregate_and_proof_signature(st, aap, SECRET_KEY)
    domain = spec.get_domain(
        st, spec.DOMAIN_AGGREGATE_AND_PROOF, spec.compute_epoch_at_slot(aap.aggregate.data.slot)
    )
    return aap, domain, sig


def build_aggregate_and_proof(ctx, fork_obj, gvr, slot, epoch, target_epoch=None, one_committee=True,
                              full_bits=False):
    te = epoch if target_epoch is None else target_epoch
    aap, domain, sig = _aggregate_and_proof(ctx, fork_obj, gvr, slot, te, one_committee, full_bits)
    return {"aggregate_and_proof": to_json(aap)}, aap, domain, sig


def build_aggregate_and_proof_v2(ctx, fork_obj, gvr, slot, epoch, target_epoch=None, one_committee=True,
                                 full_bits=False):
    te = epoch if target_epoch is None else target_epoch
    aap, domain, sig = _aggregate_and_proof(ctx, fork_obj, gvr, slot, te, one_committee, full_bits)
    payload = {"aggregate_and_proof": {"version": VERSION_NAME[ctx.fork], "data": to_json(aap)}}
    return payload, aap, domain, sig


def _random_block(ctx: Ctx, slot: int, full_bits=False):
    spec, rng = ctx.spec, ctx.rng
    block = rand_obj(rng, spec.BeaconBlock, max_list=3, max_bytes=48)
    block.slot = spec.Slot(slot)
    if since(ctx.fork, "gloas"):
        # Progressive lists have no type limit; keep each within what block processing accepts
        # (`process_operations`: MAX_ATTESTER_SLASHINGS_ELECTRA = 1 is the only one max_list
        # exceeds), as a valid block is.
        body = block.body
        limit = int(spec.MAX_ATTESTER_SLASHINGS_ELECTRA)
        body.attester_slashings = type(body.attester_slashings)(
            data=list(body.attester_slashings)[:limit]
        )
        body.parent_execution_requests = within_processing_limits(
            spec, body.parent_execution_requests
        )
    # Realistic aggregation bitlists for the contained attestations.
    for att in block.body.attestations:
        att.aggregation_bits = rand_bits(rng, type(att.aggregation_bits), rng.randint(1, 200))
    if full_bits:
        # The whole sync committee signed: SYNC_COMMITTEE_SIZE bits set.
        sa = block.body.sync_aggregate
        sa.sync_committee_bits = type(sa.sync_committee_bits)(data=[True] * int(spec.SYNC_COMMITTEE_SIZE))
        if since(ctx.fork, "gloas"):
            # And every payload attestation with the whole PTC: PTC_SIZE bits set.
            pas = block.body.payload_attestations
            if len(pas) == 0:
                pas = type(pas)(data=[rand_obj(rng, spec.PayloadAttestation)])
            for pa in pas:
                pa.aggregation_bits = spec.PayloadTimelinessCommitteeBits(data=[True] * int(spec.PTC_SIZE))
            block.body.payload_attestations = pas
    return fresh(block)


def _block_common(ctx: Ctx, fork_obj, gvr, slot, full_bits=False):
    spec = ctx.spec
    block = _random_block(ctx, slot, full_bits)
    st = ctx.state(fork_obj, gvr)
    sig = spec.get_block_signature(st, block, SECRET_KEY)
    domain = spec.get_domain(st, spec.DOMAIN_BEACON_PROPOSER, spec.compute_epoch_at_slot(block.slot))
    return block, domain, sig


def build_block(ctx, fork_obj, gvr, slot, epoch):
    assert ctx.fork == "phase0"
    block, domain, sig = _block_common(ctx, fork_obj, gvr, slot)
    return {"block": to_json(block)}, block, domain, sig


def build_block_v2(ctx, fork_obj, gvr, slot, epoch, full_bits=False, full_block=False):
    spec = ctx.spec
    block, domain, sig = _block_common(ctx, fork_obj, gvr, slot, full_bits)
    version = VERSION_NAME[ctx.fork]
    if ctx.fork in ("phase0", "altair") or full_block:
        # The whole block: PHASE0 and ALTAIR always; GLOAS too (its body is small again, the
        # execution payload travels in the envelope), besides the header cases.
        return {"beacon_block": {"version": version, "block": to_json(block)}}, block, domain, sig
    header = spec.BeaconBlockHeader(
        slot=block.slot,
        proposer_index=block.proposer_index,
        parent_root=block.parent_root,
        state_root=block.state_root,
        body_root=spec.hash_tree_root(block.body),
    )
    if spec.hash_tree_root(header) != spec.hash_tree_root(block):
        raise FixtureError("header root != block root")
    return {"beacon_block": {"version": version, "block_header": to_json(header)}}, header, domain, sig


def build_randao_reveal(ctx, fork_obj, gvr, slot, epoch):
    spec = ctx.spec
    st = ctx.state(fork_obj, gvr)
    # get_epoch_signature signs compute_epoch_at_slot(block.slot); use the epoch's first slot.
    block = spec.BeaconBlock(slot=spec.Slot(epoch * ctx.spe))
    sig = spec.get_epoch_signature(st, block, SECRET_KEY)
    e = spec.Epoch(epoch)
    domain = spec.get_domain(st, spec.DOMAIN_RANDAO, e)
    return {"randao_reveal": {"epoch": str(epoch)}}, e, domain, sig


def build_voluntary_exit(ctx, fork_obj, gvr, slot, epoch):
    spec, rng = ctx.spec, ctx.rng
    ve = rand_obj(rng, spec.VoluntaryExit)
    ve.epoch = spec.Epoch(epoch)
    ve.validator_index = spec.ValidatorIndex(rng.randint(0, 2_000_000))
    ve = fresh(ve)
    st = ctx.state(fork_obj, gvr)
    # phase0 process_voluntary_exit: domain = get_domain(state, DOMAIN_VOLUNTARY_EXIT, voluntary_exit.epoch)
    domain = spec.get_domain(st, spec.DOMAIN_VOLUNTARY_EXIT, ve.epoch)
    sig = spec_bls.Sign(SECRET_KEY, spec.compute_signing_root(ve, domain))
    return {"voluntary_exit": to_json(ve)}, ve, domain, sig


def build_sync_committee_message(ctx, fork_obj, gvr, slot, epoch):
    spec, rng = ctx.spec, ctx.rng
    root = spec.Root(rand_root(rng))
    st = ctx.state(fork_obj, gvr, slot=slot)  # get_sync_committee_message uses state.slot
    msg = spec.get_sync_committee_message(st, root, spec.ValidatorIndex(0), SECRET_KEY)
    domain = spec.get_domain(st, spec.DOMAIN_SYNC_COMMITTEE, spec.compute_epoch_at_slot(spec.Slot(slot)))
    payload = {"sync_committee_message": {"beacon_block_root": hx(root), "slot": str(slot)}}
    return payload, root, domain, msg.signature


def _subcommittee_index(ctx: Ctx, i: int) -> int:
    # Realistic 0..3 except one case with an arbitrary uint64.
    return ctx.rng.randint(0, 2**64 - 1) if i == 2 else ctx.rng.randint(0, int(ctx.spec.SYNC_COMMITTEE_SUBNET_COUNT) - 1)


def build_sync_committee_selection_proof(ctx, fork_obj, gvr, slot, epoch, i=0):
    spec = ctx.spec
    sub = Uint64(_subcommittee_index(ctx, i))
    st = ctx.state(fork_obj, gvr)
    sig = spec.get_sync_committee_selection_proof(st, spec.Slot(slot), sub, SECRET_KEY)
    data = spec.SyncAggregatorSelectionData(slot=spec.Slot(slot), subcommittee_index=sub)
    domain = spec.get_domain(
        st, spec.DOMAIN_SYNC_COMMITTEE_SELECTION_PROOF, spec.compute_epoch_at_slot(spec.Slot(slot))
    )
    return {"sync_aggregator_selection_data": to_json(data)}, data, domain, sig


def build_contribution_and_proof(ctx, fork_obj, gvr, slot, epoch, i=0, full_bits=False):
    spec, rng = ctx.spec, ctx.rng
    st = ctx.state(fork_obj, gvr)
    cap = rand_obj(rng, spec.ContributionAndProof)
    cap.contribution.slot = spec.Slot(slot)
    if full_bits:
        # The whole subcommittee: SYNC_COMMITTEE_SIZE // SYNC_COMMITTEE_SUBNET_COUNT bits set.
        size = int(spec.SYNC_COMMITTEE_SIZE) // int(spec.SYNC_COMMITTEE_SUBNET_COUNT)
        cap.contribution.aggregation_bits = type(cap.contribution.aggregation_bits)(data=[True] * size)
    cap.contribution.subcommittee_index = Uint64(_subcommittee_index(ctx, i))
    cap.aggregator_index = spec.ValidatorIndex(rng.randint(0, 2_000_000))
    cap.selection_proof = spec.get_sync_committee_selection_proof(
        st, cap.contribution.slot, cap.contribution.subcommittee_index, SECRET_KEY
    )
    cap = fresh(cap)
    sig = spec.get_contribution_and_proof_signature(st, cap, SECRET_KEY)
    domain = spec.get_domain(
        st, spec.DOMAIN_CONTRIBUTION_AND_PROOF, spec.compute_epoch_at_slot(cap.contribution.slot)
    )
    return {"contribution_and_proof": to_json(cap)}, cap, domain, sig


# Deposits: (description, pubkey is own?, withdrawal credential prefix, amount, genesis fork version);
# None: the preset's own network (GENESIS_FORK_VERSION of its config).
DEPOSIT_VARIANTS = [
    ("{preset}_32eth_0x01", True, b"\x01", 32_000_000_000, None),
    ("hoodi_random_amount_0x00", False, b"\x00", None, "0x10000910"),
    ("holesky_2048eth_0x02", True, b"\x02", 2_048_000_000_000, "0x01017000"),
]


def build_deposit(ctx: Ctx, i: int, own_pubkey: bytes):
    spec, rng = ctx.spec, ctx.rng
    _desc, own, prefix, amount, gfv = DEPOSIT_VARIANTS[i]
    own_network = gfv is None
    if own_network:
        gfv = hx(spec.config.GENESIS_FORK_VERSION)
    pubkey = own_pubkey if own else bytes(rng.getrandbits(8) for _ in range(48))
    if prefix == b"\x00":
        wc = prefix + bytes(rng.getrandbits(8) for _ in range(31))
    else:
        wc = prefix + b"\x00" * 11 + bytes(rng.getrandbits(8) for _ in range(20))
    if amount is None:
        amount = rng.randint(1_000_000_000, 2**64 - 1)
    dm = spec.DepositMessage(
        pubkey=spec.BLSPubkey(pubkey),
        withdrawal_credentials=spec.Bytes32(wc),
        amount=spec.Gwei(amount),
    )
    domain = spec.compute_domain(spec.DOMAIN_DEPOSIT, spec.Version(gfv))
    if own_network and domain != spec.compute_domain(spec.DOMAIN_DEPOSIT):
        raise FixtureError("deposit domain mismatch against spec default")
    sig = spec_bls.Sign(SECRET_KEY, spec.compute_signing_root(dm, domain))
    payload = {"deposit": {**to_json(dm), "genesis_fork_version": gfv}}
    return payload, dm, domain, sig


def validator_registration_type(spec):
    class ValidatorRegistrationV1(Container):
        fee_recipient: spec.ExecutionAddress
        gas_limit: Uint64
        timestamp: Uint64
        pubkey: spec.BLSPubkey

    return ValidatorRegistrationV1


def builder_domain(spec):
    dt = spec.DomainType(DOMAIN_APPLICATION_BUILDER_HEX)
    assert dt == spec.DOMAIN_APPLICATION_MASK
    # compute_domain(DOMAIN_APPLICATION_BUILDER): GENESIS_FORK_VERSION (mainnet), zero root.
    return spec.compute_domain(dt)


def build_validator_registration(ctx: Ctx, i: int, own_pubkey: bytes):
    spec, rng = ctx.spec, ctx.rng
    VR = validator_registration_type(spec)
    gas = [30_000_000, 36_000_000, rng.randint(0, 2**64 - 1)][i]
    pubkey = own_pubkey if i != 2 else bytes(rng.getrandbits(8) for _ in range(48))
    reg = VR(
        fee_recipient=spec.ExecutionAddress(bytes(rng.getrandbits(8) for _ in range(20))),
        gas_limit=Uint64(gas),
        timestamp=Uint64(rng.randint(1_606_824_023, 1_900_000_000)),
        pubkey=spec.BLSPubkey(pubkey),
    )
    domain = builder_domain(spec)
    sig = spec_bls.Sign(SECRET_KEY, spec.compute_signing_root(reg, domain))
    return {"validator_registration": to_json(reg)}, reg, domain, sig


# ---- gloas ---------------------------------------------------------------------------


def gloas_payload(ctx: Ctx, rtype: str, obj):
    return {GLOAS_TYPES[rtype]: {"version": VERSION_NAME[ctx.fork], "data": to_json(obj)}}


def rand_bytes(rng: Random, n: int) -> bytes:
    return bytes(rng.getrandbits(8) for _ in range(n))


def build_execution_payload_bid(ctx, fork_obj, gvr, slot, epoch):
    spec, rng = ctx.spec, ctx.rng
    bid = rand_obj(rng, spec.ExecutionPayloadBid, max_list=3)
    bid.slot = spec.Slot(slot)
    bid = fresh(bid)
    st = ctx.state(fork_obj, gvr)
    sig = spec.get_execution_payload_bid_signature(st, bid, SECRET_KEY)
    domain = spec.get_domain(st, spec.DOMAIN_BEACON_BUILDER, spec.compute_epoch_at_slot(bid.slot))
    return gloas_payload(ctx, "EXECUTION_PAYLOAD_BID", bid), bid, domain, sig


def within_processing_limits(spec, requests):
    """`requests` (gloas ExecutionRequests) with each list cut to what payload processing
    accepts (the preset's MAX_*_REQUESTS_PER_PAYLOAD): progressive lists have no type limit,
    and a valid payload stays within these. Cutting draws nothing from the RNG."""
    limits = {
        "deposits": spec.MAX_DEPOSIT_REQUESTS_PER_PAYLOAD,
        "withdrawals": spec.MAX_WITHDRAWAL_REQUESTS_PER_PAYLOAD,
        "consolidations": spec.MAX_CONSOLIDATION_REQUESTS_PER_PAYLOAD,
        "builder_deposits": spec.MAX_BUILDER_DEPOSIT_REQUESTS_PER_PAYLOAD,
        "builder_exits": spec.MAX_BUILDER_EXIT_REQUESTS_PER_PAYLOAD,
    }
    for field, limit in limits.items():
        lst = getattr(requests, field)
        setattr(requests, field, type(lst)(data=list(lst)[: int(limit)]))
    return requests


def _random_execution_payload_envelope(ctx: Ctx, slot: int):
    spec, rng = ctx.spec, ctx.rng
    env = rand_obj(rng, spec.ExecutionPayloadEnvelope)
    p = env.payload
    p.slot_number = Uint64(slot)
    p.transactions = spec.Transactions(data=[
        spec.Transaction(data=list(rand_bytes(rng, rng.randint(0, 200)))) for _ in range(rng.randint(2, 4))
    ])
    p.withdrawals = spec.Withdrawals(data=[rand_obj(rng, spec.Withdrawal) for _ in range(rng.randint(1, 4))])
    p.block_access_list = spec.BlockAccessList(data=list(rand_bytes(rng, rng.randint(1, 200))))
    p.extra_data = spec.ExtraData(data=list(rand_bytes(rng, rng.randint(0, 32))))
    p.base_fee_per_gas = spec.Uint256(rng.getrandbits(256))
    env.payload = p

    def some(list_type):
        return list_type(data=[rand_obj(rng, list_type.ELEMENT_TYPE) for _ in range(rng.randint(1, 3))])

    env.execution_requests = spec.ExecutionRequests(
        deposits=some(spec.DepositRequests),
        withdrawals=some(spec.WithdrawalRequests),
        consolidations=some(spec.ConsolidationRequests),
        builder_deposits=some(spec.BuilderDepositRequests),
        builder_exits=some(spec.BuilderExitRequests),
    )
    env.execution_requests = within_processing_limits(spec, env.execution_requests)
    return fresh(env)


def build_execution_payload_envelope(ctx, fork_obj, gvr, slot, epoch):
    spec = ctx.spec
    env = _random_execution_payload_envelope(ctx, slot)
    # get_execution_payload_envelope_signature takes the epoch from state.slot: the state is
    # at the payload's slot.
    st = ctx.state(fork_obj, gvr, slot=int(env.payload.slot_number))
    sig = spec.get_execution_payload_envelope_signature(st, env, SECRET_KEY)
    domain = spec.get_domain(
        st, spec.DOMAIN_BEACON_BUILDER, spec.compute_epoch_at_slot(spec.Slot(int(env.payload.slot_number)))
    )
    return gloas_payload(ctx, "EXECUTION_PAYLOAD_ENVELOPE", env), env, domain, sig


# (payload_present, blob_data_available), one after the other, so every combination appears.
PAYLOAD_ATTESTATION_FLAGS = [(True, True), (False, False), (True, False), (False, True)]


def build_payload_attestation_message(ctx, fork_obj, gvr, slot, epoch):
    spec, rng = ctx.spec, ctx.rng
    present, available = PAYLOAD_ATTESTATION_FLAGS[ctx.count % len(PAYLOAD_ATTESTATION_FLAGS)]
    ctx.count += 1
    data = spec.PayloadAttestationData(
        beacon_block_root=spec.Root(rand_root(rng)),
        slot=spec.Slot(slot),
        payload_present=Boolean(present),
        blob_data_available=Boolean(available),
    )
    msg = spec.PayloadAttestationMessage(
        validator_index=spec.ValidatorIndex(rng.randint(0, 2_000_000)),
        data=data,
        signature=spec.BLSSignature(),
    )
    st = ctx.state(fork_obj, gvr)
    sig = spec.get_payload_attestation_message_signature(st, msg, SECRET_KEY)
    domain = spec.get_domain(st, spec.DOMAIN_PTC_ATTESTER, spec.compute_epoch_at_slot(data.slot))
    return gloas_payload(ctx, "PAYLOAD_ATTESTATION_MESSAGE", data), data, domain, sig


def build_proposer_preferences(ctx, fork_obj, gvr, slot, epoch):
    spec, rng = ctx.spec, ctx.rng
    prefs = spec.ProposerPreferences(
        dependent_root=spec.Root(rand_root(rng)),
        proposal_slot=spec.Slot(slot),
        validator_index=spec.ValidatorIndex(rng.randint(0, 2_000_000)),
        fee_recipient=spec.ExecutionAddress(rand_bytes(rng, 20)),
        target_gas_limit=Uint64(rng.choice([30_000_000, 36_000_000, 60_000_000, rng.randint(0, 2**64 - 1)])),
    )
    st = ctx.state(fork_obj, gvr)
    proposal_epoch = spec.compute_epoch_at_slot(prefs.proposal_slot)
    domain = spec.get_domain(st, spec.DOMAIN_PROPOSER_PREFERENCES, proposal_epoch)
    # The spec's get_signed_proposer_preferences takes the version from the config's fork
    # schedule, compute_fork_version(proposal_epoch). Under the fixtures' schedule it names the
    # same version as fork_info whenever the epoch is at or after fork_info's previous fork.
    if int(proposal_epoch) >= fork_epoch(ctx.prev_fork):
        by_schedule = spec.compute_domain(
            spec.DOMAIN_PROPOSER_PREFERENCES, fixture_compute_fork_version(spec, int(proposal_epoch)), gvr
        )
        if by_schedule != domain:
            raise FixtureError("proposer preferences: fork_info domain != compute_fork_version domain")
    else:
        raise FixtureError("proposer preferences: epoch before the previous fork")
    sig = spec_bls.Sign(SECRET_KEY, spec.compute_signing_root(prefs, domain))
    return gloas_payload(ctx, "PROPOSER_PREFERENCES", prefs), prefs, domain, sig


_BUILDER_REQUEST_AUTH = None


def builder_request_auth_type():
    """Remote Signing API v1.4.0 BuilderRequestAuthGloas; not in the spec package."""
    global _BUILDER_REQUEST_AUTH
    if _BUILDER_REQUEST_AUTH is None:
        class BuilderRequestAuthData(ByteList):
            LIMIT = 4096

        class BuilderRequestAuth(Container):
            data: BuilderRequestAuthData
            slot: Uint64

        _BUILDER_REQUEST_AUTH = BuilderRequestAuth
    return _BUILDER_REQUEST_AUTH


def builder_request_auth_domain(spec, genesis_fork_version):
    dt = spec.DomainType(DOMAIN_BUILDER_REQUEST_AUTH_HEX)
    return spec.compute_domain(dt, genesis_fork_version, spec.Root())


def build_builder_request_auth(ctx: Ctx, i: int):
    spec, rng = ctx.spec, ctx.rng
    BRA = builder_request_auth_type()
    _, slot = ctx.pick("after")
    data_type = BRA.model_fields["data"].annotation
    auth = BRA(data=data_type(data=list(rand_bytes(rng, rng.randint(1, 200)))), slot=Uint64(slot))
    auth = fresh(auth)
    dt = spec.DomainType(DOMAIN_BUILDER_REQUEST_AUTH_HEX)
    # DOMAIN_BEACON_BUILDER with the application mask.
    if bytes(dt) != bytes(a | b for a, b in zip(bytes(spec.DOMAIN_BEACON_BUILDER), bytes(spec.DOMAIN_APPLICATION_MASK))):
        raise FixtureError("builder request auth domain type")
    domain = builder_request_auth_domain(spec, spec.config.GENESIS_FORK_VERSION)
    if domain != spec.compute_domain(dt):
        raise FixtureError("builder request auth domain mismatch against spec default")
    sig = spec_bls.Sign(SECRET_KEY, spec.compute_signing_root(auth, domain))
    return gloas_payload(ctx, "BUILDER_REQUEST_AUTH", auth), auth, domain, sig


SLOT_BUILDERS = {
    "AGGREGATION_SLOT": build_aggregation_slot,
    "AGGREGATE_AND_PROOF": build_aggregate_and_proof,
    "AGGREGATE_AND_PROOF_V2": build_aggregate_and_proof_v2,
    "ATTESTATION": build_attestation,
    "BLOCK": build_block,
    "BLOCK_V2": build_block_v2,
    "RANDAO_REVEAL": build_randao_reveal,
    "VOLUNTARY_EXIT": build_voluntary_exit,
    "SYNC_COMMITTEE_MESSAGE": build_sync_committee_message,
    "SYNC_COMMITTEE_SELECTION_PROOF": build_sync_committee_selection_proof,
    "SYNC_COMMITTEE_CONTRIBUTION_AND_PROOF": build_contribution_and_proof,
    "EXECUTION_PAYLOAD_BID": build_execution_payload_bid,
    "EXECUTION_PAYLOAD_ENVELOPE": build_execution_payload_envelope,
    "PAYLOAD_ATTESTATION_MESSAGE": build_payload_attestation_message,
    "PROPOSER_PREFERENCES": build_proposer_preferences,
}


def fork_info_json(fork_obj, gvr):
    return {
        "fork": {
            "previous_version": hx(fork_obj.previous_version),
            "current_version": hx(fork_obj.current_version),
            "epoch": str(int(fork_obj.epoch)),
        },
        "genesis_validators_root": hx(gvr),
    }


def make_case(ctx: Ctx, name: str, payload, obj, domain, spec_sig, fork_info=None):
    root, sig = check_sig(ctx, obj, domain, spec_sig)
    request = {"type": ctx.rtype}
    if fork_info is not None:
        request["fork_info"] = fork_info
    request.update(payload)
    return {
        "type": ctx.rtype,
        "name": name,
        "request": request,
        "domain": hx(domain),
        "signing_root": hx(root),
        "signature": hx(sig),
    }


def gen_cases_for_type(fork: str, rtype: str, own_pubkey: bytes) -> list[dict]:
    ctx = Ctx(fork, rtype)
    spec = ctx.spec
    lname = rtype.lower()
    cases = []

    if rtype == "DEPOSIT":
        for i in range(CASES_PER_TYPE):
            p, o, d, s = build_deposit(ctx, i, own_pubkey)
            desc = DEPOSIT_VARIANTS[i][0].format(preset=PRESET)
            cases.append(make_case(ctx, f"{lname}_random_{i}_{desc}", p, o, d, s))
        return cases
    if rtype == "VALIDATOR_REGISTRATION":
        for i in range(CASES_PER_TYPE):
            p, o, d, s = build_validator_registration(ctx, i, own_pubkey)
            cases.append(make_case(ctx, f"{lname}_random_{i}", p, o, d, s))
        return cases
    if rtype == "BUILDER_REQUEST_AUTH":
        for i in range(CASES_PER_TYPE):
            p, o, d, s = build_builder_request_auth(ctx, i)
            cases.append(make_case(ctx, f"{lname}_random_{i}", p, o, d, s))
        return cases

    builder = SLOT_BUILDERS[rtype]
    extra_kw = lambda i: {"i": i} if rtype in (  # noqa: E731
        "SYNC_COMMITTEE_SELECTION_PROOF",
        "SYNC_COMMITTEE_CONTRIBUTION_AND_PROOF",
    ) else {}

    for i, mode in enumerate(ctx.modes()):
        epoch, slot = ctx.pick(mode)
        fork_obj, gvr = ctx.fork_info()
        kw = extra_kw(i)
        if rtype == "AGGREGATE_AND_PROOF_V2" and i == 1 and FORKS.index(fork) >= FORKS.index("electra"):
            kw["one_committee"] = False  # random committee_bits
        p, o, d, s = builder(ctx, fork_obj, gvr, slot, epoch, **kw)
        tag = {"after": "_after_fork", "before": "_before_fork", "at_fork": "_at_fork_epoch"}[mode]
        if fork == "phase0":
            tag = {"after": "", "at_fork": "_genesis_epoch"}[mode]
        cases.append(make_case(ctx, f"{lname}_random_{i}{tag}", p, o, d, s, fork_info_json(fork_obj, gvr)))

    # ---- edge cases: which epoch selects the fork version ------------------------------
    if fork != "phase0":
        if rtype == "ATTESTATION":
            # Spec: domain epoch is attestation_data.target.epoch (not the slot's epoch).
            # slot is the last slot before the fork, target.epoch is the fork epoch -> current_version.
            _, slot = ctx.pick("last_before")
            fork_obj, gvr = ctx.fork_info()
            p, o, d, s = build_attestation(ctx, fork_obj, gvr, slot, ctx.E - 1, target_epoch=ctx.E)
            cases.append(make_case(ctx, f"{lname}_edge_target_epoch_selects_fork", p, o, d, s,
                                   fork_info_json(fork_obj, gvr)))
        if rtype in ("AGGREGATE_AND_PROOF", "AGGREGATE_AND_PROOF_V2"):
            # Spec: domain epoch is compute_epoch_at_slot(aggregate.data.slot) (not target.epoch).
            # slot is the first slot of the fork epoch, target.epoch is one before -> current_version.
            epoch, slot = ctx.pick("at_fork")
            fork_obj, gvr = ctx.fork_info()
            p, o, d, s = builder(ctx, fork_obj, gvr, slot, epoch, target_epoch=ctx.E - 1)
            cases.append(make_case(ctx, f"{lname}_edge_slot_epoch_selects_fork", p, o, d, s,
                                   fork_info_json(fork_obj, gvr)))
        if rtype not in ("ATTESTATION",):
            # Last slot / epoch before the fork -> previous_version.
            epoch, slot = ctx.pick("last_before")
            if rtype == "VOLUNTARY_EXIT" or rtype == "RANDAO_REVEAL":
                slot = epoch * ctx.spe
            fork_obj, gvr = ctx.fork_info()
            p, o, d, s = builder(ctx, fork_obj, gvr, slot, epoch, **extra_kw(0))
            cases.append(make_case(ctx, f"{lname}_edge_last_epoch_before_fork", p, o, d, s,
                                   fork_info_json(fork_obj, gvr)))
        else:
            _, slot = ctx.pick("last_before")
            fork_obj, gvr = ctx.fork_info()
            p, o, d, s = build_attestation(ctx, fork_obj, gvr, slot, ctx.E - 1)
            cases.append(make_case(ctx, f"{lname}_edge_last_epoch_before_fork", p, o, d, s,
                                   fork_info_json(fork_obj, gvr)))

    if rtype == "VOLUNTARY_EXIT" and FORKS.index(fork) >= FORKS.index("deneb"):
        # EIP-7044: from Deneb on, exits are verified with CAPELLA_FORK_VERSION. A Web3Signer
        # client requests this by sending the Capella fork in fork_info; the signer itself
        # only applies the generic fork_info rule.
        epoch, slot = ctx.pick("after")
        fork_obj, gvr = ctx.fork_info(fork_override="capella")
        p, o, d, s = build_voluntary_exit(ctx, fork_obj, gvr, epoch * ctx.spe, epoch)
        expect = spec.compute_domain(spec.DOMAIN_VOLUNTARY_EXIT, spec.config.CAPELLA_FORK_VERSION, gvr)
        if d != expect:
            raise FixtureError("EIP-7044 exit domain mismatch")
        cases.append(make_case(ctx, f"{lname}_eip7044_capella_fork_info", p, o, d, s,
                               fork_info_json(fork_obj, gvr)))

    if rtype == "BLOCK_V2" and since(fork, "gloas"):
        # Besides the header cases: the whole block, {version, block}.
        for i, mode in enumerate(ctx.modes()):
            epoch, slot = ctx.pick(mode)
            fork_obj, gvr = ctx.fork_info()
            p, o, d, s = build_block_v2(ctx, fork_obj, gvr, slot, epoch, full_block=True)
            tag = {"after": "_after_fork", "before": "_before_fork", "at_fork": "_at_fork_epoch"}[mode]
            cases.append(make_case(ctx, f"{lname}_full_block_random_{i}{tag}", p, o, d, s,
                                   fork_info_json(fork_obj, gvr)))

    # ---- bitfields at the preset's sizes, every bit set ---------------------------------
    # The sizes that differ between presets (SYNC_COMMITTEE_SIZE, the sync subcommittee,
    # MAX_COMMITTEES_PER_SLOT): a bitfield that fills them, so a wrong size or depth shows.
    # Appended last, so the cases above keep their random values.
    # Gloas: a whole BLOCK_V2 block with the whole sync committee and every payload
    # attestation with every PTC_SIZE bit (512 / 16).
    full = (
        (rtype == "BLOCK_V2" and fork in ("altair", "gloas"))
        or (rtype == "AGGREGATE_AND_PROOF_V2" and FORKS.index(fork) >= FORKS.index("electra"))
        or rtype == "SYNC_COMMITTEE_CONTRIBUTION_AND_PROOF"
    )
    if full:
        epoch, slot = ctx.pick("after")
        fork_obj, gvr = ctx.fork_info()
        kw = {"full_block": True} if rtype == "BLOCK_V2" and since(fork, "gloas") else {}
        p, o, d, s = builder(ctx, fork_obj, gvr, slot, epoch, full_bits=True, **kw)
        cases.append(make_case(ctx, f"{lname}_{PRESET}_sizes_every_bit_set", p, o, d, s,
                               fork_info_json(fork_obj, gvr)))
    return cases


def generate(out_dir: str) -> list[str]:
    os.makedirs(out_dir, exist_ok=True)
    if not spec_bls.bls_active:
        raise FixtureError("eth_consensus_specs BLS is stubbed (bls_active is False)")
    pubkey = bytes(spec_bls.SkToPk(SECRET_KEY))
    if pubkey != PyEccBLS.SkToPk(SECRET_KEY):
        raise FixtureError("pubkey mismatch between spec BLS and py_ecc")
    written = []
    for fork in FORKS:
        cases = []
        for rtype in types_for_fork(fork):
            cases += gen_cases_for_type(fork, rtype, pubkey)
            print(f"  {fork:9s} {rtype:40s} {sum(c['type'] == rtype for c in cases)}", flush=True)
        doc = {
            "fork": fork,
            "preset": PRESET,
            "generator": versions_string(),
            "secret_key": SECRET_KEY_HEX,
            "pubkey": hx(pubkey),
            "genesis_fork_version": hx(SPECS[fork].config.GENESIS_FORK_VERSION),
            "cases": cases,
        }
        path = os.path.join(out_dir, f"{fork}.json")
        with open(path, "w", encoding="ascii", newline="\n") as fh:
            json.dump(doc, fh, indent=1, ensure_ascii=True)
            fh.write("\n")
        written.append(path)
    if PRESET != "mainnet":
        write_network_config(out_dir)
    return written


def write_network_config(out_dir: str) -> None:
    """The fixtures' network as a config.yaml for the signer's --network: the spec package's
    own config of the preset, with the fork epochs of the fixtures."""
    # The wheel installs configs/<preset>.yaml beside the eth_consensus_specs package.
    package_dir = os.path.dirname(importlib.import_module("eth_consensus_specs").__file__)
    src = os.path.join(os.path.dirname(package_dir), "configs", f"{PRESET}.yaml")
    with open(src, encoding="utf-8") as fh:
        text = fh.read()
    header = (
        f"# The consensus specs' configs/{PRESET}.yaml ({versions_string()}),\n"
        "# with the fork epochs of the oracle fixtures beside it. Written by\n"
        f"# scripts/oracle/gen_signing_fixtures.py --preset {PRESET}; do not edit.\n"
    )
    for fork, epoch in MINIMAL_FORK_EPOCHS.items():
        key = f"{fork.upper()}_FORK_EPOCH"
        new, n = re.subn(rf"^{key}: .*$", f"{key}: {epoch}", text, flags=re.M)
        if n != 1:
            raise FixtureError(f"{src}: {key} found {n} times")
        text = new
    cfg = SPECS[FORKS[-1]].config
    for fork in FORKS:
        key = "GENESIS_FORK_VERSION" if fork == "phase0" else f"{fork.upper()}_FORK_VERSION"
        if not re.search(rf"^{key}: {hx(getattr(cfg, key))}$", text, flags=re.M):
            raise FixtureError(f"{src}: {key} is not the spec module's {hx(getattr(cfg, key))}")
    with open(os.path.join(out_dir, "config.yaml"), "w", encoding="utf-8", newline="\n") as fh:
        fh.write(header + text)


# --------------------------------------------------------------------------------------
# Self-check: OpenAPI schema validation + independent signer emulation + py_ecc verify
# --------------------------------------------------------------------------------------


class UnknownToSchema(Exception):
    """The request's type, or a `version` in it, is not in the OpenAPI schema (gloas)."""


class SchemaChecker:
    """Minimal strict validator for the Web3Signer request bodies (objects, strings, arrays,
    allOf, oneOf+discriminator, required, patterns, uint64 format). Unknown keys are errors."""

    def __init__(self, spec_dir: str):
        from ruamel.yaml import YAML

        yaml = YAML(typ="safe")
        with open(os.path.join(spec_dir, "schemas.yaml")) as fh:
            self.schemas = yaml.load(fh)["components"]["schemas"]
        with open(os.path.join(spec_dir, "paths", "sign.yaml")) as fh:
            sign = yaml.load(fh)
        body = sign["post"]["requestBody"]["content"]["application/json"]["schema"]
        self.type_map = {t: ref.split("/")[-1] for t, ref in body["discriminator"]["mapping"].items()}

    def resolve(self, node):
        while "$ref" in node:
            node = self.schemas[node["$ref"].split("/")[-1]]
        return node

    def collect(self, node):
        node = self.resolve(node)
        props, req = {}, set()
        for sub in node.get("allOf", []):
            p, r = self.collect(sub)
            props.update(p)
            req |= r
        props.update(node.get("properties", {}))
        req |= set(node.get("required", []))
        return props, req

    def check_request(self, req):
        if req["type"] not in self.type_map:
            raise UnknownToSchema("type")
        self.check({"$ref": "#/components/schemas/" + self.type_map[req["type"]]}, req, "$")

    def check(self, node, value, path):
        node = self.resolve(node)
        if "oneOf" in node:
            disc = node["discriminator"]["propertyName"]
            if value.get(disc) not in node["discriminator"]["mapping"]:
                raise UnknownToSchema(f"{path}.{disc} {value.get(disc)!r}")
            target = node["discriminator"]["mapping"][value[disc]].split("/")[-1]
            return self.check(self.schemas[target], value, path)
        if "allOf" in node or "properties" in node or node.get("type") == "object":
            if not isinstance(value, dict):
                raise FixtureError(f"schema {path}: expected object")
            props, req = self.collect(node)
            if not props:
                return
            missing = req - set(value)
            extra = set(value) - set(props)
            if missing or extra:
                raise FixtureError(f"schema {path}: missing {sorted(missing)} unknown {sorted(extra)}")
            for k, v in value.items():
                self.check(props[k], v, f"{path}.{k}")
            return
        t = node.get("type")
        if t == "string":
            if not isinstance(value, str):
                raise FixtureError(f"schema {path}: expected string, got {value!r}")
            if "pattern" in node and not re.match(node["pattern"], value):
                raise FixtureError(f"schema {path}: {value!r} !~ {node['pattern']}")
            if node.get("format") == "uint64" and not UINT_RE.match(value):
                raise FixtureError(f"schema {path}: {value!r} is not a uint64 string")
            if "enum" in node and value not in node["enum"]:
                raise FixtureError(f"schema {path}: {value!r} not in {node['enum']}")
            return
        if t == "array":
            if not isinstance(value, list):
                raise FixtureError(f"schema {path}: expected array")
            for i, v in enumerate(value):
                self.check(node["items"], v, f"{path}[{i}]")
            return
        raise FixtureError(f"schema {path}: unhandled schema node {node}")


def signer_emulation(fork_doc, req):
    """Recompute (domain, signing_root) from the request JSON alone, the way a Web3Signer
    implementation must: parse the message with the SSZ types selected by `type` (and
    `version`), pick the epoch per message kind, select the fork version from fork_info."""
    spec = SPECS["fulu"]  # helpers are identical across forks; types selected explicitly
    t = req["type"]
    keys = set(req)
    if "signingRoot" in keys or "signing_root" in keys:
        raise FixtureError("request must not carry signingRoot")

    if t == "DEPOSIT":
        if keys != {"type", "deposit"}:
            raise FixtureError(f"DEPOSIT keys {keys}")
        d = dict(req["deposit"])
        gfv = spec.Version(_hex_bytes(d.pop("genesis_fork_version"), "$.deposit.genesis_fork_version"))
        msg = from_json(SPECS["phase0"].DepositMessage, d, "$.deposit")
        domain = spec.compute_domain(spec.DOMAIN_DEPOSIT, gfv, spec.Root())
        return domain, spec.compute_signing_root(msg, domain), msg
    if t == "VALIDATOR_REGISTRATION":
        if keys != {"type", "validator_registration"}:
            raise FixtureError(f"VALIDATOR_REGISTRATION keys {keys}")
        VR = validator_registration_type(SPECS["bellatrix"])
        msg = from_json(VR, req["validator_registration"], "$.validator_registration")
        gfv = spec.Version(_hex_bytes(fork_doc["genesis_fork_version"], "genesis_fork_version"))
        domain = spec.compute_domain(spec.DomainType(DOMAIN_APPLICATION_BUILDER_HEX), gfv, spec.Root())
        return domain, spec.compute_signing_root(msg, domain), msg

    def gloas_versioned(key):
        """`{version, data}` of a type new in gloas: the version's spec module and the data."""
        v = req[key]
        if not isinstance(v, dict) or set(v) != {"version", "data"}:
            raise FixtureError(f"{t}: {key} keys")
        f = v["version"].lower() if isinstance(v["version"], str) else None
        if f not in SPECS or not since(f, "gloas") or v["version"] != VERSION_NAME[f]:
            raise FixtureError(f"{t}: version {v['version']!r} has no such message")
        return SPECS[f], v["data"]

    if t == "BUILDER_REQUEST_AUTH":
        if keys != {"type", "builder_request_auth"}:
            raise FixtureError(f"BUILDER_REQUEST_AUTH keys {keys}")
        _, data = gloas_versioned("builder_request_auth")
        msg = from_json(builder_request_auth_type(), data, "$.builder_request_auth.data")
        if len(msg.data) == 0:
            raise FixtureError("BUILDER_REQUEST_AUTH: empty data")
        gfv = spec.Version(_hex_bytes(fork_doc["genesis_fork_version"], "genesis_fork_version"))
        domain = builder_request_auth_domain(spec, gfv)
        return domain, spec.compute_signing_root(msg, domain), msg

    fi = req["fork_info"]
    if set(fi) != {"fork", "genesis_validators_root"} or set(fi["fork"]) != {
        "previous_version", "current_version", "epoch"
    }:
        raise FixtureError(f"bad fork_info keys {fi}")
    fork = from_json(spec.Fork, fi["fork"], "$.fork_info.fork")
    gvr = from_json(spec.Root, fi["genesis_validators_root"], "$.fork_info.genesis_validators_root")
    spe = int(spec.SLOTS_PER_EPOCH)

    def need(*names):
        if keys != {"type", "fork_info", *names}:
            raise FixtureError(f"{t}: unexpected keys {sorted(keys)}")

    def by_version(v):
        f = v.lower()
        if f not in SPECS:
            raise FixtureError(f"unknown version {v}")
        return SPECS[f]

    if t == "ATTESTATION":
        need("attestation")
        msg = from_json(spec.AttestationData, req["attestation"], "$.attestation")
        dt, epoch = spec.DOMAIN_BEACON_ATTESTER, int(msg.target.epoch)
    elif t == "AGGREGATION_SLOT":
        need("aggregation_slot")
        a = req["aggregation_slot"]
        if set(a) != {"slot"}:
            raise FixtureError("aggregation_slot keys")
        msg = from_json(spec.Slot, a["slot"], "$.aggregation_slot.slot")
        dt, epoch = spec.DOMAIN_SELECTION_PROOF, int(msg) // spe
    elif t == "AGGREGATE_AND_PROOF":
        need("aggregate_and_proof")
        msg = from_json(SPECS["phase0"].AggregateAndProof, req["aggregate_and_proof"], "$.aggregate_and_proof")
        dt, epoch = spec.DOMAIN_AGGREGATE_AND_PROOF, int(msg.aggregate.data.slot) // spe
    elif t == "AGGREGATE_AND_PROOF_V2":
        need("aggregate_and_proof")
        a = req["aggregate_and_proof"]
        if set(a) != {"version", "data"}:
            raise FixtureError("aggregate_and_proof V2 keys")
        s = by_version(a["version"])
        msg = from_json(s.AggregateAndProof, a["data"], "$.aggregate_and_proof.data")
        dt, epoch = spec.DOMAIN_AGGREGATE_AND_PROOF, int(msg.aggregate.data.slot) // spe
    elif t == "BLOCK":
        need("block")
        msg = from_json(SPECS["phase0"].BeaconBlock, req["block"], "$.block")
        dt, epoch = spec.DOMAIN_BEACON_PROPOSER, int(msg.slot) // spe
    elif t == "BLOCK_V2":
        need("beacon_block")
        b = req["beacon_block"]
        s = by_version(b["version"])
        if set(b) == {"version", "block"}:
            if b["version"] not in ("PHASE0", "ALTAIR", "GLOAS"):
                raise FixtureError("full block only expected for PHASE0/ALTAIR/GLOAS")
            msg = from_json(s.BeaconBlock, b["block"], "$.beacon_block.block")
        elif set(b) == {"version", "block_header"}:
            msg = from_json(s.BeaconBlockHeader, b["block_header"], "$.beacon_block.block_header")
        else:
            raise FixtureError("beacon_block keys")
        dt, epoch = spec.DOMAIN_BEACON_PROPOSER, int(msg.slot) // spe
    elif t == "RANDAO_REVEAL":
        need("randao_reveal")
        r = req["randao_reveal"]
        if set(r) != {"epoch"}:
            raise FixtureError("randao_reveal keys")
        msg = from_json(spec.Epoch, r["epoch"], "$.randao_reveal.epoch")
        dt, epoch = spec.DOMAIN_RANDAO, int(msg)
    elif t == "VOLUNTARY_EXIT":
        need("voluntary_exit")
        msg = from_json(spec.VoluntaryExit, req["voluntary_exit"], "$.voluntary_exit")
        dt, epoch = spec.DOMAIN_VOLUNTARY_EXIT, int(msg.epoch)
    elif t == "SYNC_COMMITTEE_MESSAGE":
        need("sync_committee_message")
        m = req["sync_committee_message"]
        if set(m) != {"beacon_block_root", "slot"}:
            raise FixtureError("sync_committee_message keys")
        msg = from_json(spec.Root, m["beacon_block_root"], "$.sync_committee_message.beacon_block_root")
        slot = from_json(spec.Slot, m["slot"], "$.sync_committee_message.slot")
        dt, epoch = spec.DOMAIN_SYNC_COMMITTEE, int(slot) // spe
    elif t == "SYNC_COMMITTEE_SELECTION_PROOF":
        need("sync_aggregator_selection_data")
        msg = from_json(spec.SyncAggregatorSelectionData, req["sync_aggregator_selection_data"],
                        "$.sync_aggregator_selection_data")
        dt, epoch = spec.DOMAIN_SYNC_COMMITTEE_SELECTION_PROOF, int(msg.slot) // spe
    elif t == "SYNC_COMMITTEE_CONTRIBUTION_AND_PROOF":
        need("contribution_and_proof")
        msg = from_json(spec.ContributionAndProof, req["contribution_and_proof"], "$.contribution_and_proof")
        dt, epoch = spec.DOMAIN_CONTRIBUTION_AND_PROOF, int(msg.contribution.slot) // spe
    elif t == "EXECUTION_PAYLOAD_BID":
        need("execution_payload_bid")
        s, data = gloas_versioned("execution_payload_bid")
        msg = from_json(s.ExecutionPayloadBid, data, "$.execution_payload_bid.data")
        dt, epoch = s.DOMAIN_BEACON_BUILDER, int(msg.slot) // spe
    elif t == "EXECUTION_PAYLOAD_ENVELOPE":
        need("execution_payload_envelope")
        s, data = gloas_versioned("execution_payload_envelope")
        msg = from_json(s.ExecutionPayloadEnvelope, data, "$.execution_payload_envelope.data")
        # get_execution_payload_envelope_signature: the epoch of state.slot, the payload's slot.
        dt, epoch = s.DOMAIN_BEACON_BUILDER, int(msg.payload.slot_number) // spe
    elif t == "PAYLOAD_ATTESTATION_MESSAGE":
        need("payload_attestation_message")
        s, data = gloas_versioned("payload_attestation_message")
        msg = from_json(s.PayloadAttestationData, data, "$.payload_attestation_message.data")
        dt, epoch = s.DOMAIN_PTC_ATTESTER, int(msg.slot) // spe
    elif t == "PROPOSER_PREFERENCES":
        need("proposer_preferences")
        s, data = gloas_versioned("proposer_preferences")
        msg = from_json(s.ProposerPreferences, data, "$.proposer_preferences.data")
        dt, epoch = s.DOMAIN_PROPOSER_PREFERENCES, int(msg.proposal_slot) // spe
    else:
        raise FixtureError(f"unknown type {t}")

    version = fork.current_version if epoch >= int(fork.epoch) else fork.previous_version
    domain = spec.compute_domain(dt, version, gvr)
    return domain, spec.compute_signing_root(msg, domain), msg


def self_check(paths: list[str], spec_dir: str | None) -> dict:
    checker = None
    if spec_dir and os.path.exists(os.path.join(spec_dir, "schemas.yaml")):
        checker = SchemaChecker(spec_dir)
    else:
        print(f"WARNING: Web3Signer OpenAPI spec not found at {spec_dir}; schema check skipped")
    summary = {}
    schema_skipped: dict[str, int] = {}
    for path in paths:
        with open(path, encoding="ascii") as fh:
            doc = json.load(fh)
        fork = doc["fork"]
        if doc.get("preset") != PRESET:
            raise FixtureError(f"{path}: preset {doc.get('preset')!r}, checking {PRESET}")
        if doc["secret_key"] != SECRET_KEY_HEX:
            raise FixtureError(f"{path}: unexpected secret key")
        pubkey = _hex_bytes(doc["pubkey"], "pubkey")
        if pubkey != PyEccBLS.SkToPk(SECRET_KEY):
            raise FixtureError(f"{path}: pubkey does not belong to secret key")
        names = set()
        expected_types = set(types_for_fork(fork))
        counts: dict[str, int] = {}
        for case in doc["cases"]:
            where = f"{path}:{case['name']}"
            if case["name"] in names:
                raise FixtureError(f"{where}: duplicate case name")
            names.add(case["name"])
            req = case["request"]
            if req["type"] != case["type"] or case["type"] not in expected_types:
                raise FixtureError(f"{where}: type mismatch / unexpected type for fork")
            if checker:
                try:
                    checker.check_request(req)
                except UnknownToSchema as e:
                    # The Web3Signer schema has no gloas types, nor a GLOAS version of the others.
                    what = f"{req['type']}: {e} unknown"
                    schema_skipped[what] = schema_skipped.get(what, 0) + 1
            domain, root, msg = signer_emulation(doc, req)
            if since(fork, "gloas") and case["type"] in ("ATTESTATION", "AGGREGATE_AND_PROOF_V2"):
                ad = msg if case["type"] == "ATTESTATION" else msg.aggregate.data
                if int(ad.index) not in (0, 1):
                    raise FixtureError(f"{where}: gloas AttestationData.index {int(ad.index)} is not 0 or 1")
            if hx(domain) != case["domain"]:
                raise FixtureError(f"{where}: domain {hx(domain)} != {case['domain']}")
            if hx(root) != case["signing_root"]:
                raise FixtureError(f"{where}: signing root {hx(root)} != {case['signing_root']}")
            # Canonical round trip: re-encoding the parsed message reproduces the JSON.
            _roundtrip(req, msg, where)
            sig = _hex_bytes(case["signature"], "signature")
            if len(sig) != 96 or not PyEccBLS.Verify(pubkey, bytes(root), sig):
                raise FixtureError(f"{where}: signature does not verify")
            counts[case["type"]] = counts.get(case["type"], 0) + 1
        missing = expected_types - set(counts)
        if missing:
            raise FixtureError(f"{path}: no cases for {sorted(missing)}")
        for t, n in counts.items():
            if n < 3:
                raise FixtureError(f"{path}: only {n} cases for {t}")
        summary[fork] = counts
        print(f"  OK {os.path.basename(path)}: {len(doc['cases'])} cases, {os.path.getsize(path)} bytes", flush=True)
    if checker:
        n = sum(schema_skipped.values())
        print(f"  schema validation skipped for {n} requests the Web3Signer schema does not know:")
        for what, k in sorted(schema_skipped.items()):
            print(f"    {k:3d} {what}")
    return summary


def check_spec_examples(spec_dir: str | None) -> None:
    """Informational: run the signer emulation on the `examples` of sign.yaml and compare
    with their `signingRoot`. Does not fail the run (some examples are not mainnet-preset
    or not self-consistent); it is evidence that the emulation matches Web3Signer."""
    path = os.path.join(spec_dir or "", "paths", "sign.yaml")
    if not spec_dir or not os.path.exists(path):
        return
    from ruamel.yaml import YAML

    with open(path) as fh:
        sign = YAML(typ="safe").load(fh)
    examples = sign["post"]["requestBody"]["content"]["application/json"].get("examples", {})
    print(f"Web3Signer sign.yaml examples (informational; {PRESET} preset, genesis 0x00000001 = the examples' network):")
    for name, ex in examples.items():
        req = dict(ex["value"])
        expected = req.pop("signingRoot", None)
        try:
            _, root, _ = signer_emulation({"genesis_fork_version": "0x00000001"}, req)
            status = "match" if hx(root) == expected else f"MISMATCH (got {hx(root)}, example {expected})"
        except Exception as e:  # noqa: BLE001 - informational only
            status = f"not parsable: {type(e).__name__}: {str(e)[:90]}"
        print(f"  {name:40s} {status}")


def _roundtrip(req, msg, where):
    t = req["type"]
    body = {
        "ATTESTATION": lambda: req["attestation"],
        "AGGREGATE_AND_PROOF": lambda: req["aggregate_and_proof"],
        "AGGREGATE_AND_PROOF_V2": lambda: req["aggregate_and_proof"]["data"],
        "BLOCK": lambda: req["block"],
        "BLOCK_V2": lambda: req["beacon_block"].get("block", req["beacon_block"].get("block_header")),
        "VOLUNTARY_EXIT": lambda: req["voluntary_exit"],
        "SYNC_COMMITTEE_SELECTION_PROOF": lambda: req["sync_aggregator_selection_data"],
        "SYNC_COMMITTEE_CONTRIBUTION_AND_PROOF": lambda: req["contribution_and_proof"],
        "VALIDATOR_REGISTRATION": lambda: req["validator_registration"],
        **{gt: (lambda k=key: req[k]["data"]) for gt, key in GLOAS_TYPES.items()},
    }.get(t)
    if body is not None and to_json(msg) != body():
        raise FixtureError(f"{where}: JSON is not the canonical encoding of the message")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", choices=PRESETS, default="mainnet",
                    help="the preset (and its spec config) of the fixtures (default: %(default)s)")
    ap.add_argument("--out", help="fixture directory (default: tests/fixtures/signing, "
                                  "or tests/fixtures/signing/<preset> for a preset other than mainnet)")
    ap.add_argument("--spec-dir", default=DEFAULT_SPEC_DIR,
                    help="Web3Signer eth2 signing OpenAPI dir, for schema validation (default: %(default)s)")
    ap.add_argument("--check", action="store_true", help="only self-check existing fixture files")
    args = ap.parse_args()
    use_preset(args.preset)
    out = args.out or DEFAULT_OUT[args.preset]
    try:
        if args.check:
            paths = [os.path.join(out, f"{f}.json") for f in FORKS]
        else:
            print(f"Generating the {PRESET} preset's fixtures with {versions_string()}")
            paths = generate(out)
        print("Self-check:")
        summary = self_check(paths, args.spec_dir)
        check_spec_examples(args.spec_dir)
    except FixtureError as e:
        print(f"FIXTURE ERROR: {e}", file=sys.stderr)
        return 1
    total = sum(sum(c.values()) for c in summary.values())
    print(f"All {total} cases verified.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
