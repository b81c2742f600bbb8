#!/usr/bin/env python3
"""Check the published examples of a Remote Signing API `sign.yaml` against the consensus specs'
Python package and against hsm-signer.

For every request example under `post.requestBody...examples` this computes the signing root
three ways, under the mainnet and the minimal preset (the examples do not say which they use):
  * published: the example's own `signingRoot` (when it has one);
  * spec: `gen_signing_fixtures.signer_emulation`, which parses the request into the
    eth-consensus-specs SSZ containers and computes domain and root with the spec's helpers;
  * ours: `hsm-signer signing-root --network <mainnet | the minimal fixtures' config.yaml>`.
and prints one line per example and preset. It exits 1 if hsm-signer and the spec package ever
disagree (one accepts what the other refuses, or their roots differ); an example whose published
root matches neither is reported as such ("the spec package agrees with us, not with the
example"), not as a failure of ours.

The API document itself is not part of this repository; fetch ethereum/remote-signing-api and
point --sign-yaml at its `signing/paths/sign.yaml`.

    /tmp/oracle-venv/bin/python scripts/oracle/check_api_examples.py \
        --sign-yaml /path/to/remote-signing-api/signing/paths/sign.yaml \
        --signer target/release/hsm-signer
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

from ruamel.yaml import YAML

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_signing_fixtures as g  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
NETWORKS = {
    "mainnet": "mainnet",
    "minimal": os.path.join(REPO, "tests", "fixtures", "signing", "minimal", "config.yaml"),
}


def spec_root(preset: str, request: dict) -> str:
    g.use_preset(preset)
    req = {k: v for k, v in request.items() if k not in ("signingRoot", "signing_root")}
    gfv = g.SPECS["fulu"].config.GENESIS_FORK_VERSION
    try:
        _, root, _ = g.signer_emulation({"genesis_fork_version": g.hx(gfv)}, req)
    except Exception as e:  # noqa: BLE001 - every refusal is reported, with its reason
        return f"refused ({str(e)[:70]})"
    return g.hx(root)


def our_root(signer: str, data_dir: str, preset: str, request: dict) -> str:
    r = subprocess.run(
        [signer, "--data-dir", data_dir, "signing-root", "--network", NETWORKS[preset]],
        input=json.dumps(request).encode(),
        capture_output=True,
        check=False,
    )
    if r.returncode != 0:
        return f"refused ({r.stderr.decode().strip()[:70]})"
    return json.loads(r.stdout)["signing_root"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sign-yaml", required=True)
    ap.add_argument("--signer", default=os.path.join(REPO, "target", "release", "hsm-signer"))
    args = ap.parse_args()
    doc = YAML(typ="safe").load(open(args.sign_yaml))
    examples = doc["post"]["requestBody"]["content"]["application/json"]["examples"]
    failures = 0
    with tempfile.TemporaryDirectory() as data_dir:
        for name, example in examples.items():
            request = example["value"]
            published = request.get("signingRoot") or request.get("signing_root")
            results = {}
            for preset in ("mainnet", "minimal"):
                spec = spec_root(preset, request)
                ours = our_root(args.signer, data_dir, preset, request)
                results[preset] = (spec, ours)
                agree = spec == ours or (spec.startswith("refused") and ours.startswith("refused"))
                if not agree:
                    failures += 1
            roots = {p: r for p, r in results.items() if r[1].startswith("0x") and r[0] == r[1]}
            if published and any(r[1] == published for r in roots.values()):
                presets = ", ".join(p for p, r in roots.items() if r[1] == published)
                verdict = f"reproduces ({presets})"
            elif published and roots:
                verdict = "the spec package agrees with us, not with the example"
            elif not roots:
                verdict = "refused by the spec package and by us"
            else:
                verdict = "no root published; spec package and we agree"
            print(f"{name}: {verdict}")
            for preset, (spec, ours) in results.items():
                mark = "" if spec == ours or (spec.startswith("refused") and ours.startswith("refused")) else "  <-- DISAGREE"
                print(f"    {preset:8} published {published or '-'}\n             spec      {spec}\n             ours      {ours}{mark}")
    print(f"{len(examples)} examples; {failures} disagreements between the spec package and hsm-signer")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
