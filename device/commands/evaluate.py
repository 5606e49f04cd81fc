"""`smearscope evaluate --model DIR [--model DIR]... --data DIR --json OUT`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from device.commands.classify import model_dirs
from device.dataset import list_class_folders, scan
from device.ensemble import Ensemble
from device.errors import SmearscopeError
from device.fsutil import atomic_write_bytes
from device.metrics import report
from device.preprocess import read_image


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="measure the ensemble on a folder of label folders")
    p.add_argument("--model", action="append", metavar="DIR", help="bundle dir (repeat for an ensemble)")
    p.add_argument("--data", required=True, metavar="DIR", help="folder with one sub-folder per label id")
    p.add_argument("--json", metavar="OUT", help="write the metrics here")
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=run)


def evaluate(ensemble: Ensemble, data: Path, *, progress: bool = True) -> dict:
    folders = list_class_folders(data)
    unknown = [f for f in folders if f not in ensemble.label_ids]
    if unknown:
        raise SmearscopeError(
            f"{data}: folder(s) {', '.join(unknown)} are not labels of the model "
            f"(its labels: {', '.join(ensemble.label_ids)})"
        )
    items, _ = scan(data, labels=folders, dedupe=False)
    if not items:
        raise SmearscopeError(f"{data}: no images found")
    index = {lb: i for i, lb in enumerate(ensemble.label_ids)}
    y_true, y_pred, abstained = [], [], []
    for it in tqdm(items, desc="evaluate", unit="img", disable=not progress, file=sys.stderr):
        pred = ensemble.classify(read_image(it.path), with_cam=False)
        y_true.append(index[it.label])
        y_pred.append(index[pred.label])
        abstained.append(pred.abstained)
    out = report(np.array(y_true), np.array(y_pred), ensemble.label_ids)
    ab = np.array(abstained)
    correct = np.array(y_true) == np.array(y_pred)
    kept = ~ab
    out["abstained"] = int(ab.sum())
    out["abstain_rate"] = float(ab.mean())
    out["accuracy_when_not_abstained"] = float(correct[kept].mean()) if kept.any() else None
    out["models"] = [{"name": m.manifest.name, "sha256": m.manifest.sha256} for m in ensemble.models]
    out["data"] = str(data)
    return out


def run(args: argparse.Namespace) -> int:
    ensemble = Ensemble.from_dirs(model_dirs(args), num_threads=args.threads)
    out = evaluate(ensemble, Path(args.data))
    text = json.dumps(out, indent=2)
    if args.json:
        atomic_write_bytes(args.json, (text + "\n").encode())
    print(
        f"n={out['n']} accuracy={out['accuracy']:.4f} macro_f1={out['macro_f1']:.4f} "
        f"abstained={out['abstained']} models={','.join(ensemble.names)}"
    )
    return 0
