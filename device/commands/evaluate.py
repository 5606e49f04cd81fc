"""`smearscope evaluate --model DIR [--model DIR]... --data DIR [--um-per-px X|auto] [--json OUT]`
(cell ensembles: `[--images auto|fields|cells|cell-images] [--malignant A,B]`).

The same path as `classify` (and the daemon). A field ensemble: `device/datasets/evaluation.py`. A
cell ensemble: `device/screening/evaluate.py`, on a folder of field images (the station's per-field
call against the folder labels' malignant flags), of single-cell crops at the classifier's input scale,
or of single-cell pictures at their own scale (folders named by the bundle's labels). This module
parses arguments and prints."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from device.commands._scale_args import add_scale_arg, classifier_for
from device.commands.classify import model_dirs
from device.datasets.evaluation import evaluate
from device.datasets.folders import list_class_folders
from device.errors import SmearscopeError
from device.fsutil import atomic_write_bytes
from device.optics.analyse import ScaleArg
from device.screening.evaluate import (
    CELL_IMAGES,
    CELLS,
    FIELDS,
    are_crops,
    data_kind,
    evaluate_cell_images,
    evaluate_cells,
    evaluate_fields,
)
from device.screening.screen import CellScreen


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="measure the ensemble on a folder of label folders")
    p.add_argument("--model", action="append", metavar="DIR", help="bundle dir (repeat for an ensemble)")
    p.add_argument("--data", required=True, metavar="DIR", help="folder with one sub-folder per label id")
    p.add_argument("--json", metavar="OUT", help="write the metrics here")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument(
        "--malignant",
        metavar="A,B",
        help="cell ensemble on field images: the malignant label folders (the others are not); default: "
        "the data's labels.json",
    )
    p.add_argument(
        "--images",
        choices=("auto", "fields", "cells", "cell-images"),
        default="auto",
        help="cell ensemble: field images, single-cell crops at the classifier's input scale (cells), or "
        "single-cell pictures at their own scale (cell-images: given or auto); auto: when every folder is "
        "a label of the bundle, crops if every image has the input size and no --um-per-px is given, "
        "else cell-images; otherwise fields",
    )
    add_scale_arg(p)
    p.set_defaults(func=run)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def run(args: argparse.Namespace) -> int:
    classifier, scale = classifier_for(args, model_dirs(args))
    data = Path(args.data)
    if isinstance(classifier, CellScreen):
        out = run_cells(args, classifier, data, scale)
    else:
        if args.malignant or args.images != "auto":
            raise SmearscopeError("--malignant and --images are for a cell ensemble; these are field bundles")
        out = evaluate(classifier, data, scale=scale)
        print(
            f"n={out['n']} accuracy={out['accuracy']:.4f} macro_f1={out['macro_f1']:.4f} "
            f"abstained={out['abstained']} confidently_wrong={out['confidently_wrong']} "
            f"models={','.join(classifier.ensemble.names)}"
        )
    if args.json:
        atomic_write_bytes(args.json, (json.dumps(out, indent=2) + "\n").encode())
    return 0


def images_kind(args: argparse.Namespace, screen: CellScreen, data: Path) -> str:
    if args.images == "cell-images":
        return CELL_IMAGES
    if args.images != "auto":
        return args.images
    if data_kind(list_class_folders(data), screen.ensemble.labels) != CELLS:
        return FIELDS
    given = getattr(args, "um_per_px", None) is not None
    return CELLS if not given and are_crops(data, screen.classifier.size) else CELL_IMAGES


def run_cells(args: argparse.Namespace, screen: CellScreen, data: Path, scale: ScaleArg) -> dict:
    models = ",".join(screen.ensemble.names)
    kind = images_kind(args, screen, data)
    if kind in (CELLS, CELL_IMAGES):
        out = (
            evaluate_cells(screen, data) if kind == CELLS else evaluate_cell_images(screen, data, scale=scale)
        )
        print(
            f"cells n={out['n']} right={out['right']} uncertain={out['uncertain']} "
            f"confidently_wrong={out['confidently_wrong']} accuracy={_fmt(out['accuracy'])} "
            f"blast_sensitivity={_fmt(out['blast_sensitivity'])} "
            f"blast_specificity={_fmt(out['blast_specificity'])} models={models}"
        )
        for folder, r in out["per_folder"].items():
            print(
                f"  {folder}: n={r['n']} right={r['right']} uncertain={r['uncertain']} "
                f"confidently_wrong={r['confidently_wrong']} uncertain_rate={_fmt(r['uncertain_rate'])}"
            )
    else:
        malignant = [m.strip() for m in args.malignant.split(",") if m.strip()] if args.malignant else None
        out = evaluate_fields(screen, data, scale=scale, malignant=malignant)
        for im in out["images"]:
            print(f"{im['path']}: {im['folder']} -> {im['call']} ({im['label']}) {im['outcome']}")
        sub = out["subtype"]
        print(
            f"fields n={out['n']} right={out['right']} uncertain={out['uncertain']} "
            f"confidently_wrong={out['confidently_wrong']} accuracy={_fmt(out['accuracy'])} "
            f"uncertain_rate={_fmt(out['uncertain_rate'])} "
            f"confidently_wrong_rate={_fmt(out['confidently_wrong_rate'])} "
            f"subtype {sub['subtype_matches']}/{sub['blasts_called_on_malignant']} models={models}"
        )
        sr = out["second_reading"]
        if sr["models"]:
            print(
                f"second reading ({','.join(sr['models'])}): read {sr['read']} fields the cells left "
                f"uncertain, called {sr['called']} (right {sr['called_right']}, wrong {sr['called_wrong']})"
            )
        print(f"rule: {out['rule']}")
    if out.get("set_scale"):
        ss = out["set_scale"]
        print(
            f"set scale: {ss['pictures']} pictures screened at {ss['um_per_px']} µm/px, the median of "
            f"{ss['from']} red-cell estimates ({ss['rule']})"
        )
    out["models"] = [{"name": m.manifest.name, "sha256": m.manifest.sha256} for m in screen.ensemble.models]
    out["data"] = str(data)
    return out
