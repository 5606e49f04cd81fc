"""`smearscope classify IMAGE... [--model DIR]... [--um-per-px X|auto] [--json]`.

Each image goes the daemon's way. A field ensemble (device/optics/analyse.py): rescaled from its µm/px
to the models', cut into tiles, tiles without white cells skipped, the rest classified and combined by
the field rule; without `--um-per-px` an image is assumed to be at the models' scale (centre crop) and
the red-cell scale check says whether that looks right. A cell ensemble (device/screening/): its white
cells detected, each classified and decided, the field's differential and call; without `--um-per-px`
the scale is measured from the image's red cells."""

from __future__ import annotations

import argparse
import json
import sys

from common.wording import DISCLAIMER
from device.commands._cells_output import cells_json, cells_lines
from device.commands._scale_args import add_scale_arg, classifier_for
from device.errors import ImageError, SmearscopeError
from device.optics.analyse import FieldClassifier, ScaleArg
from device.paths import default_bundle_dirs
from device.preprocess import read_image
from device.screening.screen import CellScreen


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("classify", help="classify image files with the model ensemble")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--model", action="append", metavar="DIR", help="bundle dir (repeat for an ensemble)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--threads", type=int, default=None, help="interpreter threads")
    add_scale_arg(p)
    p.set_defaults(func=run)


def model_dirs(args: argparse.Namespace) -> list[str]:
    dirs = args.model or [str(d) for d in default_bundle_dirs()]
    if not dirs:
        raise SmearscopeError("no model bundles found: pass --model DIR or install a bundle in models/")
    return dirs


def run(args: argparse.Namespace) -> int:
    classifier, scale = classifier_for(args, model_dirs(args))
    if isinstance(classifier, CellScreen):
        failed = run_cells(args, classifier, scale)
    else:
        failed = run_fields(args, classifier, scale)
    if not args.json:
        print(DISCLAIMER, file=sys.stderr)
    return 1 if failed else 0


def _read(path: str):
    try:
        return read_image(path)
    except ImageError as exc:
        print(f"smearscope classify: error: {exc}", file=sys.stderr)
        return None


def run_cells(args: argparse.Namespace, screen: CellScreen, scale: ScaleArg) -> int:
    failed = 0
    for path in args.images:
        rgb = _read(path)
        if rgb is None:
            failed += 1
            continue
        result = screen.screen(rgb, scale)
        if args.json:
            print(json.dumps({"file": path, **cells_json(result, screen.ensemble)}), flush=True)
        else:
            print("\n".join(cells_lines(path, result)), flush=True)
    return failed


def run_fields(args: argparse.Namespace, fields: FieldClassifier, scale: ScaleArg) -> int:
    ensemble = fields.ensemble
    failed = 0
    for path in args.images:
        rgb = _read(path)
        if rgb is None:
            failed += 1
            continue
        a = fields.analyse(rgb, scale)
        pred = a.prediction
        if args.json:
            out = {"file": path, **pred.to_dict(), "models": ensemble.names, "field": a.to_dict()}
            print(json.dumps(out), flush=True)
        else:
            bars = "  ".join(f"{k} {v:.3f}" for k, v in pred.probabilities.items())
            fr = a.field
            if fr.state == "no_cells":
                line = f"{path}: {fr.display.upper()}"
            elif fr.state == "refused":
                line = f"{path}: NOT CLASSIFIED ({fr.reason})"
            else:
                call = f"UNCERTAIN, refer ({pred.reason}); top {pred.label}" if pred.abstained else pred.label
                line = f"{path}: {call}  confidence {pred.confidence:.3f}  [{bars}]"
            plan = a.prepared.plan
            if plan is not None and not plan.legacy:
                s = plan.summary()
                line += (
                    f"  | {a.prepared.um_per_px:.4g} µm/px ({a.prepared.scale_source}), "
                    f"{s['classified']}/{s['tiles']} tiles classified"
                )
            if fields.scale_known and fr.state != "refused":
                line += f"  | {a.prepared.check.message}"
            print(line, flush=True)
    if not args.json and not fields.scale_known:
        print(
            "scale unknown: the models declare no µm/px; images are centre-cropped, no scale check",
            file=sys.stderr,
        )
    return failed
