#!/usr/bin/env python3
"""Re-check the committed signing fixtures with another release of the consensus spec package.

gen_signing_fixtures.py makes and checks the fixtures with eth-consensus-specs 1.7.0b4, whose
SSZ types come from eth-ssz-specs. Release 1.7.0a13 builds the same containers on remerkleable,
a separate SSZ implementation. This script reads only the fixture files: for every case it
parses the signed message into 1.7.0a13's container of the case's preset and fork, recomputes
the domain from the request's fork_info (or, for DEPOSIT, VALIDATOR_REGISTRATION and
BUILDER_REQUEST_AUTH, from the genesis fork version) and the signing root, and compares both
with the recorded ones. For gloas, 1.7.0a13's containers are remerkleable's EIP-7495
ProgressiveContainer / EIP-7916 ProgressiveList, ProgressiveByteList and ProgressiveBitlist.

Usage (Python >= 3.12, a venv of its own):
    python3.12 -m venv /tmp/oracle-a13
    /tmp/oracle-a13/bin/pip install eth-consensus-specs==1.7.0a13 ckzg==2.1.8
    /tmp/oracle-a13/bin/python scripts/oracle/cross_check_signing_fixtures.py [--preset minimal]
"""

# No `from __future__ import annotations`: remerkleable reads the container's field types
# from its annotations, which must not be strings.
import argparse
import importlib
import json
import os
import sys
from importlib.metadata import version as pkg_version

FORKS = ["phase0", "altair", "bellatrix", "capella", "deneb", "electra", "fulu", "gloas"]
REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIXTURES = os.path.join(REPO_ROOT, "tests", "fixtures", "signing")
DIRS = {"mainnet": FIXTURES, "minimal": os.path.join(FIXTURES, "minimal")}

# Builder specs: DOMAIN_APPLICATION_BUILDER = DomainType('0x00000001').
DOMAIN_APPLICATION_BUILDER = bytes.fromhex("00000001")
# Remote Signing API v1.4.0 BUILDER_REQUEST_AUTH: DOMAIN_BEACON_BUILDER with the application mask.
DOMAIN_BUILDER_REQUEST_AUTH = bytes.fromhex("0B000001")

# The body key of each type new in gloas, `{version: "GLOAS", data: <message>}`.
GLOAS_TYPES = {
    "EXECUTION_PAYLOAD_BID": "execution_payload_bid",
    "EXECUTION_PAYLOAD_ENVELOPE": "execution_payload_envelope",
    "PAYLOAD_ATTESTATION_MESSAGE": "payload_attestation_message",
    "PROPOSER_PREFERENCES": "proposer_preferences",
    "BUILDER_REQUEST_AUTH": "builder_request_auth",
}


def gloas_data(specs, req):
    """The spec module of a gloas type's `version` and its `data`."""
    body = req[GLOAS_TYPES[req["type"]]]
    if set(body) != {"version", "data"} or body["version"] != "GLOAS":
        raise SystemExit(f"{req['type']}: body {sorted(body)} version {body.get('version')!r}")
    return specs["gloas"], body["data"]


def check(preset: str) -> int:
    specs = {f: importlib.import_module(f"eth_consensus_specs.{f}.{preset}") for f in FORKS}
    spec = specs["fulu"]  # domain and root helpers are the same in every fork
    spe = int(spec.SLOTS_PER_EPOCH)
    total = 0
    per_fork = {}
    for fork in FORKS:
        with open(os.path.join(DIRS[preset], f"{fork}.json"), encoding="ascii") as fh:
            doc = json.load(fh)
        if doc["preset"] != preset or doc["fork"] != fork:
            raise SystemExit(f"{fork}.json: preset {doc['preset']}, fork {doc['fork']}")
        for case in doc["cases"]:
            req, t = case["request"], case["type"]
            where = f"{preset}/{fork}/{case['name']}"
            if t == "DEPOSIT":
                d = dict(req["deposit"])
                gfv = spec.Version(bytes.fromhex(d.pop("genesis_fork_version")[2:]))
                msg = spec.DepositMessage.from_obj(d)
                domain = spec.compute_domain(spec.DOMAIN_DEPOSIT, gfv, spec.Root())
            elif t == "VALIDATOR_REGISTRATION":
                class ValidatorRegistrationV1(spec.Container):
                    fee_recipient: spec.ExecutionAddress
                    gas_limit: spec.Uint64
                    timestamp: spec.Uint64
                    pubkey: spec.BLSPubkey

                msg = ValidatorRegistrationV1.from_obj(req["validator_registration"])
                gfv = spec.Version(bytes.fromhex(doc["genesis_fork_version"][2:]))
                domain = spec.compute_domain(spec.DomainType(DOMAIN_APPLICATION_BUILDER), gfv, spec.Root())
            elif t == "BUILDER_REQUEST_AUTH":
                g, data = gloas_data(specs, req)

                class BuilderRequestAuth(g.Container):  # Remote Signing API v1.4.0 BuilderRequestAuthGloas
                    data: g.ByteList[4096]
                    slot: g.Uint64

                msg = BuilderRequestAuth.from_obj(data)
                gfv = g.Version(bytes.fromhex(doc["genesis_fork_version"][2:]))
                domain = g.compute_domain(g.DomainType(DOMAIN_BUILDER_REQUEST_AUTH), gfv, g.Root())
            else:
                msg, domain_type, epoch = message(specs, spec, spe, req)
                fi = req["fork_info"]
                fork_obj = spec.Fork.from_obj(fi["fork"])
                gvr = spec.Root.from_obj(fi["genesis_validators_root"])
                version = fork_obj.current_version if epoch >= fork_obj.epoch else fork_obj.previous_version
                domain = spec.compute_domain(domain_type, version, gvr)
            if "0x" + bytes(domain).hex() != case["domain"]:
                raise SystemExit(f"{where}: domain 0x{bytes(domain).hex()} != {case['domain']}")
            root = "0x" + bytes(spec.compute_signing_root(msg, domain)).hex()
            if root != case["signing_root"]:
                raise SystemExit(f"{where}: signing root {root} != {case['signing_root']}")
            total += 1
            per_fork[fork] = per_fork.get(fork, 0) + 1
    for fork, n in per_fork.items():
        print(f"  {fork:9s} {n:3d} cases agree")
    return total


def message(specs, spec, spe, req):
    """(signed object, domain type, epoch that selects the fork version) of a request."""
    t = req["type"]
    if t == "ATTESTATION":
        m = spec.AttestationData.from_obj(req["attestation"])
        return m, spec.DOMAIN_BEACON_ATTESTER, int(m.target.epoch)
    if t == "AGGREGATION_SLOT":
        slot = spec.Slot(int(req["aggregation_slot"]["slot"]))
        return slot, spec.DOMAIN_SELECTION_PROOF, int(slot) // spe
    if t in ("AGGREGATE_AND_PROOF", "AGGREGATE_AND_PROOF_V2"):
        a = req["aggregate_and_proof"]
        s = specs[a["version"].lower()] if t.endswith("V2") else specs["phase0"]
        m = s.AggregateAndProof.from_obj(a["data"] if t.endswith("V2") else a)
        return m, spec.DOMAIN_AGGREGATE_AND_PROOF, int(m.aggregate.data.slot) // spe
    if t in ("BLOCK", "BLOCK_V2"):
        if t == "BLOCK":
            m = specs["phase0"].BeaconBlock.from_obj(req["block"])
        else:
            b = req["beacon_block"]
            s = specs[b["version"].lower()]
            m = s.BeaconBlock.from_obj(b["block"]) if "block" in b else s.BeaconBlockHeader.from_obj(b["block_header"])
        return m, spec.DOMAIN_BEACON_PROPOSER, int(m.slot) // spe
    if t == "RANDAO_REVEAL":
        e = spec.Epoch(int(req["randao_reveal"]["epoch"]))
        return e, spec.DOMAIN_RANDAO, int(e)
    if t == "VOLUNTARY_EXIT":
        m = spec.VoluntaryExit.from_obj(req["voluntary_exit"])
        return m, spec.DOMAIN_VOLUNTARY_EXIT, int(m.epoch)
    if t == "SYNC_COMMITTEE_MESSAGE":
        m = req["sync_committee_message"]
        return spec.Root.from_obj(m["beacon_block_root"]), spec.DOMAIN_SYNC_COMMITTEE, int(m["slot"]) // spe
    if t == "SYNC_COMMITTEE_SELECTION_PROOF":
        m = spec.SyncAggregatorSelectionData.from_obj(req["sync_aggregator_selection_data"])
        return m, spec.DOMAIN_SYNC_COMMITTEE_SELECTION_PROOF, int(m.slot) // spe
    if t == "SYNC_COMMITTEE_CONTRIBUTION_AND_PROOF":
        m = spec.ContributionAndProof.from_obj(req["contribution_and_proof"])
        return m, spec.DOMAIN_CONTRIBUTION_AND_PROOF, int(m.contribution.slot) // spe
    if t == "EXECUTION_PAYLOAD_BID":
        g, data = gloas_data(specs, req)
        m = g.ExecutionPayloadBid.from_obj(data)
        return m, g.DOMAIN_BEACON_BUILDER, int(m.slot) // spe
    if t == "EXECUTION_PAYLOAD_ENVELOPE":
        # get_execution_payload_envelope_signature: the epoch of state.slot, the payload's slot.
        g, data = gloas_data(specs, req)
        m = g.ExecutionPayloadEnvelope.from_obj(data)
        return m, g.DOMAIN_BEACON_BUILDER, int(m.payload.slot_number) // spe
    if t == "PAYLOAD_ATTESTATION_MESSAGE":
        g, data = gloas_data(specs, req)
        m = g.PayloadAttestationData.from_obj(data)
        return m, g.DOMAIN_PTC_ATTESTER, int(m.slot) // spe
    if t == "PROPOSER_PREFERENCES":
        g, data = gloas_data(specs, req)
        m = g.ProposerPreferences.from_obj(data)
        return m, g.DOMAIN_PROPOSER_PREFERENCES, int(m.proposal_slot) // spe
    raise SystemExit(f"unknown type {t}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", choices=sorted(DIRS), default="mainnet")
    args = ap.parse_args()
    n = check(args.preset)
    print(f"{n} {args.preset} cases: eth-consensus-specs {pkg_version('eth-consensus-specs')} "
          "computes every recorded signing root.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
