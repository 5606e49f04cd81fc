"""`smearscope evaluate --model DIR [--model DIR]... --data DIR [--um-per-px X|auto] --json OUT`.

The same path as `classify` (and the daemon); the measuring is `device/evaluation.py`, this module
parses arguments and prints."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from device.commands._scale_args import add_scale_arg, field_classifier
from device.commands.classify import model_dirs
from device.evaluation import evaluate
from device.fsutil import atomic_write_bytes


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="measure the ensemble on a folder of label folders")
    p.add_argument("--model", action="append", metavar="DIR", help="bundle dir (repeat for an ensemble)")
    p.add_argument("--data", required=True, metavar="DIR", help="folder with one sub-folder per label id")
    p.add_argument("--json", metavar="OUT", help="write the metrics here")
    p.add_argument("--threads", type=int, default=None)
    add_scale_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    fields, scale = field_classifier(args, model_dirs(args))
    out = evaluate(fields, Path(args.data), scale=scale)
    text = json.dumps(out, indent=2)
    if args.json:
        atomic_write_bytes(args.json, (text + "\n").encode())
    print(
        f"n={out['n']} accuracy={out['accuracy']:.4f} macro_f1={out['macro_f1']:.4f} "
        f"abstained={out['abstained']} confidently_wrong={out['confidently_wrong']} "
        f"models={','.join(fields.ensemble.names)}"
    )
    return 0
