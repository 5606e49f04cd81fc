"""`smearscope classify IMAGE... [--model DIR]... [--json]`."""

from __future__ import annotations

import argparse
import json
import sys

from device.ensemble import Ensemble
from device.errors import ImageError, SmearscopeError
from device.paths import default_bundle_dirs
from device.preprocess import read_image


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("classify", help="classify image files with the model ensemble")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--model", action="append", metavar="DIR", help="bundle dir (repeat for an ensemble)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--threads", type=int, default=None, help="interpreter threads")
    p.set_defaults(func=run)


def model_dirs(args: argparse.Namespace) -> list[str]:
    dirs = args.model or [str(d) for d in default_bundle_dirs()]
    if not dirs:
        raise SmearscopeError("no model bundles found: pass --model DIR or install a bundle in models/")
    return dirs


def run(args: argparse.Namespace) -> int:
    ensemble = Ensemble.from_dirs(model_dirs(args), num_threads=args.threads)
    failed = 0
    for path in args.images:
        try:
            rgb = read_image(path)
        except ImageError as exc:
            print(f"smearscope classify: error: {exc}", file=sys.stderr)
            failed += 1
            continue
        pred = ensemble.classify(rgb, with_cam=False)
        if args.json:
            out = {"file": path, **pred.to_dict(), "models": ensemble.names}
            print(json.dumps(out), flush=True)
        else:
            bars = "  ".join(f"{k} {v:.3f}" for k, v in pred.probabilities.items())
            call = f"UNCERTAIN, refer ({pred.reason}); top {pred.label}" if pred.abstained else pred.label
            print(f"{path}: {call}  confidence {pred.confidence:.3f}  [{bars}]", flush=True)
    if not args.json:
        print("Screening aid for trained staff, not a diagnosis.", file=sys.stderr)
    return 1 if failed else 0
