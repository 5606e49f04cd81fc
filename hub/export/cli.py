"""`smearscope-hub export-dataset`: reviewed fields as a training folder (see hub/export/dataset.py)."""

from __future__ import annotations

import argparse
import json
import sys

from hub import db
from hub.export.dataset import (
    ExportError,
    ExportFilter,
    image_loader,
    parse_since,
    select_entries,
    write_export,
)


def register(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser(
        "export-dataset",
        help="write reviewed images as a training folder (one folder per label) with a manifest",
        description="Write the images a technician reviewed as DIR/<label>/<record id>.jpg with "
        "DIR/manifest.json and DIR/manifest.csv; `smearscope train --data DIR` reads it as is. "
        "Written to a temporary folder and swapped into place; re-running replaces an earlier export.",
    )
    e.add_argument(
        "--out", required=True, metavar="DIR", help="output folder (new, empty or an earlier export)"
    )
    e.add_argument("--db", default=argparse.SUPPRESS, help="database URL")
    e.add_argument(
        "--since",
        metavar="DATE",
        help="only images whose latest review (capture, when unreviewed) is at or after DATE "
        "(2026-11-01 or an ISO-8601 time; UTC unless a zone is given; device clock)",
    )
    e.add_argument(
        "--device", action="append", default=[], metavar="NAME", help="only this device (repeatable)"
    )
    e.add_argument(
        "--disagreements-only",
        action="store_true",
        help="only images whose review changed the model's label",
    )
    e.add_argument(
        "--include-unreviewed",
        action="store_true",
        help="also images nobody reviewed, under the model's call (reviewed=false in the manifest)",
    )
    e.set_defaults(func=cmd_export_dataset)


def cmd_export_dataset(args: argparse.Namespace) -> int:
    try:
        flt = ExportFilter(
            since=parse_since(args.since) if args.since else None,
            devices=tuple(args.device),
            disagreements_only=args.disagreements_only,
            include_unreviewed=args.include_unreviewed,
        )
        engine = db.make_engine(args.db)
        db.upgrade(engine)
        with db.session_factory(engine)() as s:
            sel = select_entries(s, flt)
            out = write_export(sel, flt, args.out, image_loader(s))
        engine.dispose()
    except ExportError as exc:
        print(f"smearscope-hub: error: {exc}", file=sys.stderr)
        return 1
    doc = json.loads((out / "manifest.json").read_text())
    print(json.dumps({"out": str(out), **doc["counts"]}))
    print(
        f"{doc['counts']['images']} image(s) in {len(doc['labels'])} label folder(s) written to {out}; "
        f"train on it with: smearscope train --data {out} ...",
        file=sys.stderr,
    )
    return 0
