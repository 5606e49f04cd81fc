"""`smearscope-hub export-dataset`: reviewed fields as a training folder (see hub/export/dataset.py)."""

from __future__ import annotations

import argparse
import json
import sys

from hub import db
from hub.export.cells import DEFAULT_SIDE_UM, CellExportOptions, select_cells, write_cells_export
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
    _cell_options(e)
    e.set_defaults(func=cmd_export_dataset)


def _cell_options(e: argparse.ArgumentParser) -> None:
    """The options of `--cells` (the cells export, hub/export/cells.py)."""
    e.add_argument(
        "--cells",
        action="store_true",
        help="export reviewed cells instead of fields: DIR/<reviewed label>/<record>.<index>.png, square "
        "crops around each cell at the record's µm/px, with labels.json (cells reviewed 'not_a_cell' "
        "are left out)",
    )
    e.add_argument(
        "--cell-side-um",
        type=float,
        default=DEFAULT_SIDE_UM,
        metavar="UM",
        help=f"--cells: the crop's side in µm (default {DEFAULT_SIDE_UM:g}: the cell bundles' crop)",
    )
    e.add_argument(
        "--blast-label",
        action="append",
        default=[],
        metavar="LABEL",
        help="--cells: this label is a blast (labels.json malignant=true), whatever the published "
        "bundles say (repeatable)",
    )
    e.add_argument(
        "--normal-label",
        action="append",
        default=[],
        metavar="LABEL",
        help="--cells: this label is not a blast (repeatable); labels neither given nor declared by a "
        "bundle published on this hub are left out",
    )


def cmd_export_dataset(args: argparse.Namespace) -> int:
    try:
        flt = ExportFilter(
            since=parse_since(args.since) if args.since else None,
            devices=tuple(args.device),
            disagreements_only=args.disagreements_only,
            include_unreviewed=args.include_unreviewed,
        )
        opts = None
        if args.cells:
            opts = CellExportOptions(args.cell_side_um, tuple(args.blast_label), tuple(args.normal_label))
        engine = db.make_engine(args.db)
        db.upgrade(engine)
        with db.session_factory(engine)() as s:
            if opts is not None:
                out = write_cells_export(select_cells(s, flt, opts), flt, opts, args.out, image_loader(s))
            else:
                out = write_export(select_entries(s, flt), flt, args.out, image_loader(s))
        engine.dispose()
    except ExportError as exc:
        print(f"smearscope-hub: error: {exc}", file=sys.stderr)
        return 1
    doc = json.loads((out / "manifest.json").read_text())
    print(json.dumps({"out": str(out), **doc["counts"]}))
    what = "cell crop(s)" if args.cells else "image(s)"
    print(
        f"{doc['counts']['images']} {what} in {len(doc['labels'])} label folder(s) written to {out}; "
        f"train on it with: smearscope train --data {out} ...",
        file=sys.stderr,
    )
    return 0
