"""`smearscope models install|list|rollback`: the command line of the model store
(`device/models/modelstore.py`, which holds the layout and the safety rules); this module parses
arguments and prints."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from device.errors import SmearscopeError
from device.models.modelstore import install, list_bundles, rollback
from device.models.signing import SignaturePolicy
from device.paths import models_dir as default_models_dir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="install, list and roll back model bundles")
    p.add_argument(
        "--models-dir",
        metavar="DIR",
        help="models directory (default: $SMEARSCOPE_MODELS_DIR, else the repository's models/)",
    )
    p.add_argument(
        "--config", metavar="FILE", help="station config with [models] trusted_keys / allow_unsigned"
    )
    msub = p.add_subparsers(dest="models_command", metavar="ACTION")
    msub.required = True

    pi = msub.add_parser("install", help="verify a bundle folder or archive and make it active")
    pi.add_argument("source", metavar="BUNDLE_DIR|ARCHIVE", help="bundle folder, .tar.gz/.tgz/.tar or .zip")
    pi.add_argument("--name", help="install under this name (default: the manifest's name)")
    pi.add_argument("--no-default", action="store_true", help="do not add it to the ensemble (DEFAULT)")
    pi.add_argument("--keep", type=int, default=3, help="versions kept per bundle for rollback (default 3)")
    pi.add_argument(
        "--allow-downgrade",
        action="store_true",
        help="install it even when its signed release version is older than the active one",
    )
    pi.add_argument("--restart", action="store_true", help="then `systemctl try-restart smearscope`")
    pi.set_defaults(func=_run_install)

    pl = msub.add_parser("list", help="installed bundles, their versions and hash check")
    pl.add_argument("--json", action="store_true")
    pl.add_argument("--no-verify", action="store_true", help="skip the sha256 check")
    pl.set_defaults(func=_run_list)

    pr = msub.add_parser("rollback", help="return a bundle to the version active before")
    pr.add_argument("name")
    pr.add_argument("--restart", action="store_true", help="then `systemctl try-restart smearscope`")
    pr.set_defaults(func=_run_rollback)

    from device.commands._signing_cli import register_actions

    register_actions(msub)


def policy_from_args(args: argparse.Namespace) -> SignaturePolicy:
    from device.config import load_config

    return SignaturePolicy.from_config(load_config(getattr(args, "config", None)))


def _root(args: argparse.Namespace) -> Path:
    return Path(args.models_dir) if args.models_dir else default_models_dir()


def _restart_hint(args: argparse.Namespace) -> None:
    if getattr(args, "restart", False):
        import subprocess

        rc = subprocess.call(["systemctl", "try-restart", "smearscope.service"])
        print("restarted smearscope.service" if rc == 0 else "could not restart smearscope.service")
    else:
        print("the running daemon still uses the old model: sudo systemctl restart smearscope")


def _run_install(args: argparse.Namespace) -> int:
    if args.keep < 1:
        raise SmearscopeError("--keep must be at least 1")
    result = install(
        args.source,
        _root(args),
        name=args.name,
        add_to_default=not args.no_default,
        keep=args.keep,
        policy=policy_from_args(args),
        allow_downgrade=args.allow_downgrade,
    )
    if result["changed"]:
        _restart_hint(args)
    return 0


def _run_list(args: argparse.Namespace) -> int:
    rows = list_bundles(_root(args), verify=not args.no_verify)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0 if all(r["ok"] for r in rows) else 1
    if not rows:
        print(f"no bundles in {_root(args)}")
        return 1
    for r in rows:
        mark = "*" if r["in_ensemble"] else " "
        if r["ok"]:
            acc = f" accuracy {r['accuracy']:.4f}" if isinstance(r.get("accuracy"), int | float) else ""
            print(
                f"{mark} {r['name']}  {r['sha256'][:12]}  version {r['release']}  {r['architecture']} "
                f"{r['quantization']} {r['input']}  labels {','.join(r['labels'])}{acc}"
            )
        else:
            print(f"{mark} {r['name']}  BROKEN: {r['error']}")
        if r["versions"]:
            print(f"    versions: {', '.join(r['versions'])} (active {r['active_version']})")
    print("* = in the ensemble")
    return 0 if all(r["ok"] for r in rows) else 1


def _run_rollback(args: argparse.Namespace) -> int:
    result = rollback(args.name, _root(args), policy=policy_from_args(args))
    print(f"{result['name']}: back at {result['version']} (was {result['previous']})")
    _restart_hint(args)
    return 0
