"""`smearscope-hub keys ...`, `smearscope-hub models publish|list` and `devices set-group`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sqlalchemy import select

from hub import db
from hub.fleet.bundle_sig import SignatureError
from hub.fleet.tables import BundleSet, TrustedKey
from hub.fleet.updates import add_key, fleet_overview, publish, remove_key, set_group, set_json


def _db_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", default=argparse.SUPPRESS, help="database URL")


def register_device_actions(ks: argparse._SubParsersAction) -> None:
    g = ks.add_parser("set-group", help="put a station in a group (or --none: no group)")
    g.add_argument("name")
    g.add_argument("group", nargs="?")
    g.add_argument("--none", action="store_true", help="remove the station from its group")
    _db_arg(g)
    g.set_defaults(func=cmd_set_group)


def register(sub: argparse._SubParsersAction) -> None:
    k = sub.add_parser("keys", help="public keys whose signed bundles may be published")
    ks = k.add_subparsers(dest="action", required=True)
    a = ks.add_parser("add", help="trust a .pub file (from `smearscope models keygen`)")
    a.add_argument("pub", metavar="PUBFILE")
    a.add_argument("--comment", default="")
    _db_arg(a)
    a.set_defaults(func=cmd_key_add)
    ls = ks.add_parser("list", help="trusted keys")
    _db_arg(ls)
    ls.set_defaults(func=cmd_key_list)
    r = ks.add_parser("remove", help="stop trusting a key (already published sets stay)")
    r.add_argument("key_id")
    _db_arg(r)
    r.set_defaults(func=cmd_key_remove)

    m = sub.add_parser("models", help="publish signed bundles to the stations")
    ms = m.add_subparsers(dest="action", required=True)
    p = ms.add_parser("publish", help="check signatures, store the bundles, make them the current set")
    p.add_argument("bundles", nargs="+", metavar="BUNDLE_DIR")
    p.add_argument("--group", help="current for this group only (default: every station)")
    p.add_argument("--set-name", help="a name for the set (default: the bundle names)")
    p.add_argument(
        "--allow-downgrade",
        action="store_true",
        help="publish bundles older than the ones they replace (stations still ask their admin)",
    )
    _db_arg(p)
    p.set_defaults(func=cmd_publish)
    lm = ms.add_parser("list", help="published sets and which station runs what")
    lm.add_argument("--json", action="store_true")
    _db_arg(lm)
    lm.set_defaults(func=cmd_models_list)


def _sessions(args: argparse.Namespace):  # noqa: ANN202
    return db.session_factory(db.upgraded_engine(args.db))


def _fail(msg: str) -> int:
    print(f"smearscope-hub: error: {msg}", file=sys.stderr)
    return 1


def cmd_set_group(args: argparse.Namespace) -> int:
    if bool(args.group) == bool(args.none):
        return _fail("give a GROUP or --none")
    with _sessions(args)() as s:
        try:
            set_group(s, args.name, None if args.none else args.group)
        except ValueError as exc:
            return _fail(str(exc))
    print(f"{args.name}: group {args.group or '(none)'}")
    return 0


def cmd_key_add(args: argparse.Namespace) -> int:
    try:
        text = Path(args.pub).read_text(encoding="utf-8")
    except OSError as exc:
        return _fail(f"{args.pub}: {exc.strerror or exc}")
    with _sessions(args)() as s:
        try:
            kid = add_key(s, text, args.comment or Path(args.pub).name)
        except SignatureError as exc:
            return _fail(f"{args.pub}: {exc}")
    print(f"trusted key {kid}")
    return 0


def cmd_key_list(args: argparse.Namespace) -> int:
    with _sessions(args)() as s:
        for k in s.scalars(select(TrustedKey).order_by(TrustedKey.added_at)):
            print(f"{k.key_id}\t{k.comment}\tadded {k.added_at}")
    return 0


def cmd_key_remove(args: argparse.Namespace) -> int:
    with _sessions(args)() as s:
        try:
            remove_key(s, args.key_id)
        except ValueError as exc:
            return _fail(str(exc))
    print(f"key {args.key_id} no longer trusted")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    with _sessions(args)() as s:
        try:
            r = publish(
                s,
                args.bundles,
                group=args.group,
                set_name=args.set_name,
                allow_downgrade=args.allow_downgrade,
            )
        except (SignatureError, ValueError, OSError) as exc:
            return _fail(f"not published: {exc}")
    print(
        f"set #{r['set_id']} {r['name']} ({', '.join(r['bundles'])}) is current for "
        f"{'group ' + r['group'] if r['group'] else 'every station'}"
    )
    for problem in r["downgrade"]:
        print(f"downgrade (stations hold it for their admin's accept): {problem}")
    return 0


def cmd_models_list(args: argparse.Namespace) -> int:
    with _sessions(args)() as s:
        sets = [set_json(s, b) for b in s.scalars(select(BundleSet).order_by(BundleSet.id))]
        fleet = fleet_overview(s)
    if args.json:
        print(json.dumps({"sets": sets, "devices": fleet}, indent=2))
        return 0
    for st in sets:
        names = ", ".join(b["name"] for b in st["bundles"])
        print(f"set #{st['id']} {st['name']} for {st['group'] or 'all'}: {names}")
    for d in fleet:
        runs = ", ".join(m["name"] for m in d["installed"]) or "not reported"
        cur = f"#{d['current_set']['id']}" if d["current_set"] else "none"
        print(
            f"{d['device']} [{d['group'] or 'all'}] runs {runs}; current set {cur}; {d['update_state'] or ''}"
        )
    return 0
