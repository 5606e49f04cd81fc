"""`smearscope models keygen|sign|verify`: the Ed25519 release keys and bundle signatures
(device/models/signing.py). Registered by `device/commands/models.py` (a leading underscore keeps this
module from becoming a top-level command of its own)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from device.errors import SmearscopeError
from device.models.signing import (
    PROJECT_ALIAS,
    TrustedKeys,
    generate_keypair,
    load_trusted_keys,
    sign_bundle,
    verify_bundle,
)


def register_actions(msub: argparse._SubParsersAction) -> None:
    pk = msub.add_parser("keygen", help="make an Ed25519 signing key pair (private 0600 + .pub)")
    pk.add_argument("--out", required=True, metavar="KEYFILE", help="private key file, e.g. clinic.key")
    pk.add_argument("--comment", default="", help="text after the key in the .pub file")
    pk.set_defaults(func=_run_keygen)

    ps = msub.add_parser("sign", help="write signature.json over every file of bundle folders")
    ps.add_argument("bundles", nargs="+", metavar="BUNDLE_DIR")
    ps.add_argument("--key", required=True, metavar="KEYFILE", help="private key from `models keygen`")
    ps.set_defaults(func=_run_sign)

    pv = msub.add_parser("verify", help="check bundle signatures; exit 1 on any failure")
    pv.add_argument("bundles", nargs="+", metavar="BUNDLE_DIR")
    pv.add_argument(
        "--trusted-key",
        action="append",
        default=[],
        metavar="PUB",
        help="a .pub file or inline key to trust (repeatable; default: the config's [models] trusted_keys)",
    )
    pv.add_argument("--json", action="store_true")
    pv.set_defaults(func=_run_verify)


def _run_keygen(args: argparse.Namespace) -> int:
    priv, pub, kid = generate_keypair(args.out, args.comment)
    print(f"private key {priv} (mode 0600: keep it off the stations and out of any bundle)")
    print(f"public key  {pub}")
    print(f"key id      {kid}")
    print(f'stations trust it with [models] trusted_keys = ["{pub.resolve()}"]')
    return 0


def _run_sign(args: argparse.Namespace) -> int:
    key = Path(args.key)
    for b in args.bundles:
        if key.resolve().is_relative_to(Path(b).resolve()):
            raise SmearscopeError(f"{key} is inside {b}: a private key never goes into a bundle")
        doc = sign_bundle(b, key)
        n = len(json.loads(doc["payload"])["files"])
        print(f"signed {b}: {n} files, key {doc['key_id']}")
    return 0


def _trust(args: argparse.Namespace) -> TrustedKeys:
    if args.trusted_key:
        return load_trusted_keys(args.trusted_key, env={})
    from device.config import load_config

    return load_trusted_keys(load_config(getattr(args, "config", None)).models.trusted_keys)


def _run_verify(args: argparse.Namespace) -> int:
    trust = _trust(args)
    results = [verify_bundle(b, trust) for b in args.bundles]
    if args.json:
        out = [
            {
                "bundle": str(v.bundle),
                "ok": v.ok,
                "key_id": v.key_id,
                "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in v.checks],
            }
            for v in results
        ]
        print(json.dumps(out, indent=2))
    else:
        print(
            "trusted keys: "
            + (", ".join(trust.describe()) or f"none (try --trusted-key or '{PROJECT_ALIAS}')")
        )
        for v in results:
            print(f"{v.bundle}: {'OK' if v.ok else 'FAILED'}")
            for c in v.checks:
                print(f"  [{'ok' if c.ok else 'FAIL'}] {c.name}: {c.detail}")
    return 0 if all(v.ok for v in results) else 1
