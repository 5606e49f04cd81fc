"""Per-cell and per-field figures of cell-classifier bundles on the crop dataset's TEST split, with the
cross-lab copies: `python -m training.cells.evaluate --model B1 --model B2 --run RUN --out PREFIX`.

Runs the device's own code path (`device.models.ensemble.Ensemble` on each crop) for the ensemble of all
`--model`s and for each member alone, on the test split's original crops (stain copies left out) and on
copies made to look like the other lab:
- `original`: the crops as built (every crop already at the B-ALL pitch's detail);
- `colour_to_other`: each crop moved onto the OTHER lab's mean Reinhard statistics (its training crops);
- `to_other_lab`: PBC crops in the B-ALL lab's colour (their detail already is the B-ALL lab's); B-ALL
  crops in the PBC lab's colour and sharpened (unsharp mask: the crisper camera's look, since detail the
  soft camera never recorded cannot be added);
- `pbc_full_detail`: PBC crops re-cut from their source image WITHOUT the pitch step (a sharp camera).
Targets: confident "blast" on a normal cell <= 1% and blasts called a normal type <= 1% on the
cross-lab copies; on `original`: blast sensitivity >= 99%, specificity >= 99.5%, macro-F1 over the
normal types >= 0.95, confidently wrong <= 0.5%, B-ALL field accuracy (training/cells/image_rule.py)
>= 99.5%. The split is per source image (no patient ids): figures are optimistic for new patients.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from device.errors import SmearscopeError
from device.fsutil import atomic_write_bytes
from device.metrics import report
from device.models.ensemble import Ensemble
from device.models.model import TFLiteModel
from device.preprocess import apply_white_reference, read_image
from training.cells.build_crops import MANIFEST
from training.cells.crops import CropSpec, resize_to
from training.cells.image_rule import RULE, CellCall, field_call
from training.cells.stain import LabStats, lab_stats, mean_stats, reinhard

SPLIT_NOTE = (
    "split per source image (all crops of a field or PBC image on one side); the file names carry no "
    "patient ids, so one patient's fields can sit on both sides: optimistic for new patients"
)
VARIANTS = ("original", "colour_to_other", "to_other_lab", "pbc_full_detail")


@dataclass
class TestCrop:
    rel: str
    label: str
    lab: str
    source_image: str
    source_class: str
    box: list[int]
    rgb: np.ndarray


def sharpen(rgb: np.ndarray, sigma: float = 1.0, amount: float = 1.0) -> np.ndarray:
    blur = cv2.GaussianBlur(rgb.astype(np.float32), (0, 0), sigma)
    out = rgb.astype(np.float32) * (1 + amount) - blur * amount
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def load_test(crops_root: Path, split: dict) -> tuple[list[TestCrop], dict[str, LabStats], dict]:
    manifest = json.loads((crops_root / MANIFEST).read_text())
    records = {r["path"]: r for r in manifest["crops"]}

    def rel_of(row: dict) -> str:
        p = Path(row["path"])
        return p.relative_to(crops_root).as_posix() if p.is_absolute() else p.as_posix()

    train_stats: dict[str, list[LabStats]] = defaultdict(list)
    for row in split["train"]:
        r = records.get(rel_of(row))
        if r is not None and r["copy_of"] is None:
            train_stats[r["lab"]].append(lab_stats(read_image(crops_root / r["path"])))
    test = []
    for row in split["test"]:
        r = records.get(rel_of(row))
        if r is None:
            raise SmearscopeError(f"{row['path']}: not in {crops_root}/{MANIFEST}")
        if r["copy_of"] is not None:
            continue
        test.append(
            TestCrop(
                r["path"],
                r["label"],
                r["lab"],
                r["source_image"],
                r["source_class"],
                r["box"],
                read_image(crops_root / r["path"]),
            )
        )
    return test, {lab: mean_stats(s) for lab, s in train_stats.items()}, manifest


def variant_fn(
    name: str, lab_means: dict[str, LabStats], manifest: dict
) -> Callable[[TestCrop], np.ndarray | None]:
    other = {"pbc": "ball", "ball": "pbc"}
    spec = CropSpec(**{k: manifest["crop"][k] for k in ("side_um", "size", "pitch_um")})
    pbc_root = Path(manifest["sources"]["pbc"]["path"])

    def fn(c: TestCrop) -> np.ndarray | None:
        if name == "original":
            return c.rgb
        if name == "colour_to_other":
            return reinhard(c.rgb, lab_means[other[c.lab]])
        if name == "to_other_lab":
            moved = reinhard(c.rgb, lab_means[other[c.lab]])
            return moved if c.lab == "pbc" else sharpen(moved)
        if name == "pbc_full_detail":
            if c.lab != "pbc":
                return None
            x0, y0, x1, y1 = c.box
            src = apply_white_reference(read_image(pbc_root / c.source_image), "background")
            return resize_to(np.ascontiguousarray(src[y0:y1, x0:x1]), spec.size)
        raise ValueError(name)

    return fn


def cell_metrics(
    truth: list[str],
    calls: list[CellCall],
    labels: list[str],
    blast: dict[str, bool],
    normal_types: list[str],
) -> dict:
    idx = {lb: i for i, lb in enumerate(labels)}
    rep = report([idx[t] for t in truth], [idx[c.label] for c in calls], labels)
    t_blast = np.array([blast[t] for t in truth])
    p_blast = np.array([blast[c.label] for c in calls])
    conf = np.array([not c.abstained for c in calls])
    correct = np.array([c.label == t for c, t in zip(calls, truth, strict=True)])
    n_b, n_nb = int(t_blast.sum()), int((~t_blast).sum())

    def frac(mask: np.ndarray, of: np.ndarray) -> float | None:
        return float((mask & of).sum() / of.sum()) if of.sum() else None

    present = [lb for lb in normal_types if rep["per_class"][lb]["support"] > 0]
    return {
        "n": len(truth),
        "n_blast": n_b,
        "n_not_blast": n_nb,
        "accuracy": rep["accuracy"],
        "uncertain": float((~conf).mean()) if len(conf) else None,
        "accuracy_when_confident": float(correct[conf].mean()) if conf.any() else None,
        "confidently_wrong": float((conf & ~correct).mean()) if len(conf) else None,
        "confidently_wrong_blast_level": float((conf & (p_blast != t_blast)).mean()) if len(conf) else None,
        "blast_sensitivity": frac(p_blast, t_blast),
        "blast_specificity": frac(~p_blast, ~t_blast),
        "confident_blast_on_normal": frac(p_blast & conf, ~t_blast),
        "blast_called_normal_confident": frac(~p_blast & conf, t_blast),
        "blast_called_normal_any": frac(~p_blast, t_blast),
        "macro_f1_normal_types": float(np.mean([rep["per_class"][lb]["f1"] for lb in present]))
        if present
        else None,
        "per_class": rep["per_class"],
        "confusion_matrix": rep["confusion_matrix"],
    }


def field_metrics(crops: list[TestCrop], calls: list[CellCall], blast: dict[str, bool]) -> dict:
    by_image: dict[str, list[CellCall]] = defaultdict(list)
    truth: dict[str, str] = {}
    for c, call in zip(crops, calls, strict=True):
        if c.lab != "ball":
            continue
        by_image[c.source_image].append(call)
        truth[c.source_image] = c.label
    states: dict[str, int] = defaultdict(int)
    by_truth: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    exact = binary = 0
    for img, cells in by_image.items():
        f = field_call(cells, blast)
        states[f.state] += 1
        t = truth[img]
        by_truth[t][f.state if f.state != "malignant" else f"malignant:{f.label}"] += 1
        if blast[t]:
            binary += f.state == "malignant"
            exact += f.state == "malignant" and f.label == t
        else:
            binary += f.state == "benign"
            exact += f.state == "benign"
    n = len(by_image)
    return {
        "rule": RULE,
        "n_fields": n,
        "accuracy_4class": exact / n if n else None,
        "accuracy_malignant_vs_benign": binary / n if n else None,
        "states": dict(states),
        "states_by_truth": {t: dict(v) for t, v in sorted(by_truth.items())},
        "note": "uncertain and no_cells count as not correct; fields in which no cell was found never "
        "reach the split (see the crop manifest's counts)",
    }


def device_detector_fields(
    test: list[TestCrop], manifest: dict, configs: dict[str, Ensemble], blast: dict[str, bool]
) -> dict:
    """The B-ALL test fields as the station reads them: `device.cells.detect_cells` (white cells, edge
    cells included) and `device.cells.crop_cell` (reflected border), then the field rule."""
    from device.cells import crop as cells_crop
    from device.cells import detect as cells_detect

    spec = CropSpec(**{k: manifest["crop"][k] for k in ("side_um", "size", "pitch_um")})
    um = float(manifest["sources"]["ball"]["um_per_px"])
    root = Path(manifest["sources"]["ball"]["path"])
    truth = {c.source_image: c.label for c in test if c.lab == "ball"}
    fields = []
    for img, label in sorted(truth.items()):
        rgb = apply_white_reference(read_image(root / img), "background")
        cells = [c for c in cells_detect.detect_cells(rgb, um) if c.kind == "white"]
        crops = [
            (c.touches_edge, cells_crop.crop_cell(rgb, c, um, side_um=spec.side_um, size=spec.size))
            for c in cells
        ]
        fields.append((label, crops))
    out: dict = {"n_fields": len(fields), "rule": RULE}
    for cname, ens in configs.items():
        res = {}
        for mode in ("all_cells", "inner_cells"):
            exact = binary = 0
            states: dict[str, int] = defaultdict(int)
            by_truth: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
            for label, crops in fields:
                calls = []
                for edge, x in crops:
                    if mode == "inner_cells" and edge:
                        continue
                    p = ens.classify(x, with_cam=False)
                    calls.append(CellCall(p.label, p.confidence, p.abstained))
                f = field_call(calls, blast)
                states[f.state] += 1
                by_truth[label][f.state if f.state != "malignant" else f"malignant:{f.label}"] += 1
                if blast[label]:
                    binary += f.state == "malignant"
                    exact += f.state == "malignant" and f.label == label
                else:
                    ok = f.state == "benign"
                    binary += ok
                    exact += ok
            n = len(fields)
            res[mode] = {
                "accuracy_4class": exact / n if n else None,
                "accuracy_malignant_vs_benign": binary / n if n else None,
                "states": dict(states),
                "states_by_truth": {t: dict(v) for t, v in sorted(by_truth.items())},
            }
        out[cname] = res
        print(f"device detector  {cname:32s} " + json.dumps(res), flush=True)
    return out


def run(args: argparse.Namespace) -> dict:
    run_dir = Path(args.run)
    split = json.loads((run_dir / "split.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    crops_root = Path(config["data"] if isinstance(config["data"], str) else config["data"][0])
    test, lab_means, manifest = load_test(crops_root, split)
    if args.limit:
        test = test[:: max(1, len(test) // args.limit)]
    members = [TFLiteModel.from_dir(str(m), 1) for m in args.model]
    configs = {"ensemble": Ensemble(members)} if len(members) > 1 else {}
    for m in members:
        configs[m.manifest.name] = Ensemble([m])
    first = members[0].manifest
    labels = first.label_ids
    blast = {lb.id: lb.malignant is not False for lb in first.labels}  # undeclared counts as a blast
    normal_types = [lb.id for lb in first.labels if lb.malignant is False and lb.id != "hematogone"]
    out: dict = {
        "models": {m.manifest.name: m.manifest.sha256 for m in members},
        "run": str(run_dir),
        "split_note": SPLIT_NOTE,
        "blast_labels": [lb for lb in labels if blast[lb]],
        "normal_types": normal_types,
        "lab_means": {k: {"mean": v.mean, "std": v.std} for k, v in lab_means.items()},
        "variants": {},
    }
    for vname in args.variants:
        fn = variant_fn(vname, lab_means, manifest)
        inputs = [(c, fn(c)) for c in test]
        inputs = [(c, x) for c, x in inputs if x is not None]
        res: dict = {}
        for cname, ens in configs.items():
            t0 = time.perf_counter()
            calls = []
            for _, x in inputs:
                p = ens.classify(x, with_cam=False)
                calls.append(CellCall(p.label, p.confidence, p.abstained))
            crops = [c for c, _ in inputs]
            truth = [c.label for c in crops]
            res[cname] = {
                "cells": cell_metrics(truth, calls, labels, blast, normal_types),
                "per_lab": {
                    lab: cell_metrics(
                        [t for t, c in zip(truth, crops, strict=True) if c.lab == lab],
                        [k for k, c in zip(calls, crops, strict=True) if c.lab == lab],
                        labels,
                        blast,
                        normal_types,
                    )
                    for lab in ("ball", "pbc")
                    if any(c.lab == lab for c in crops)
                },
                "fields": field_metrics(crops, calls, blast) if vname == "original" else None,
                "seconds": round(time.perf_counter() - t0, 1),
            }
            print(f"{vname:16s} {cname:32s} " + summary_line(res[cname]), flush=True)
        out["variants"][vname] = res
    if args.device_detector:
        out["device_detector"] = device_detector_fields(test, manifest, configs, blast)
    return out


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def summary_line(r: dict) -> str:
    c = r["cells"]
    s = (
        f"n={c['n']} sens={_pct(c['blast_sensitivity'])} spec={_pct(c['blast_specificity'])} "
        f"F1normal={c['macro_f1_normal_types'] or 0:.3f} uncertain={_pct(c['uncertain'])} "
        f"confwrong={_pct(c['confidently_wrong'])} confblast|normal={_pct(c['confident_blast_on_normal'])} "
        f"blast->normal(conf)={_pct(c['blast_called_normal_confident'])}"
    )
    if r.get("fields"):
        s += f" fields={_pct(r['fields']['accuracy_4class'])}"
    return s


def markdown(doc: dict) -> str:
    lines = [
        "# Cell classifier: test split and cross-lab copies",
        "",
        "A screening aid for trained staff, not a diagnosis. " + doc["split_note"] + ".",
        "",
        f"Models: {', '.join(f'`{k}` ({v[:12]})' for k, v in doc['models'].items())}. Run: `{doc['run']}`.",
        f"Blast labels (declared by the bundle): {', '.join(doc['blast_labels'])}. "
        f"Normal types (macro-F1): {', '.join(doc['normal_types'])}.",
        "",
        "Per cell, int8, the device's `Ensemble.classify`. sens/spec: blast vs not-blast on the arg-max "
        "label (an uncertain cell counts by its arg-max); conf. blast | normal: confident blast calls on "
        "non-blast cells; blast -> normal: blast cells confidently called a non-blast label.",
        "",
        "| variant | model | n | blast sens. | blast spec. | macro-F1 normal | uncertain | confidently wrong "
        "| conf. blast on normal | blast -> normal (conf.) | field acc. (4-class / malignant) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for vname, res in doc["variants"].items():
        for cname, r in res.items():
            c, f = r["cells"], r["fields"]
            fa = f"{_pct(f['accuracy_4class'])} / {_pct(f['accuracy_malignant_vs_benign'])}" if f else "-"
            f1 = f"{c['macro_f1_normal_types']:.4f}" if c["macro_f1_normal_types"] is not None else "-"
            lines.append(
                f"| {vname} | {cname} | {c['n']} | {_pct(c['blast_sensitivity'])} "
                f"| {_pct(c['blast_specificity'])} | {f1} | {_pct(c['uncertain'])} "
                f"| {_pct(c['confidently_wrong'])} | {_pct(c['confident_blast_on_normal'])} "
                f"| {_pct(c['blast_called_normal_confident'])} | {fa} |"
            )
    dd = doc.get("device_detector")
    if dd:
        lines += [
            "",
            f"B-ALL test fields read by the station's detector and crop (`device.cells`), "
            f"{dd['n_fields']} fields, field accuracy 4-class / malignant-vs-benign (states):",
            "",
        ]
        for cname, res in dd.items():
            if isinstance(res, dict):
                for mode, r in res.items():
                    lines.append(
                        f"- {cname}, {mode}: {_pct(r['accuracy_4class'])} / "
                        f"{_pct(r['accuracy_malignant_vs_benign'])} ({r['states_by_truth']})"
                    )
    ens = next(iter(doc["variants"].get("original", {}).values()), None)
    if ens:
        lines += [
            "",
            f"Field rule: {ens['fields']['rule']}. Field states: {ens['fields']['states']} "
            f"({ens['fields']['n_fields']} B-ALL test fields); by true field label: "
            f"{ens['fields']['states_by_truth']}.",
            "",
            "Per class (original, first model row), recall / precision / support:",
            "",
        ]
        lines += [
            f"- {lb}: {v['recall']:.4f} / {v['precision']:.4f} / {v['support']}"
            for lb, v in ens["cells"]["per_class"].items()
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.cells.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--model", action="append", required=True, help="bundle dir (repeat for an ensemble)")
    p.add_argument("--run", required=True, help="the run dir whose split.json and data the bundles share")
    p.add_argument("--out", required=True, help="output prefix: writes PREFIX.json and PREFIX.md")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument(
        "--device-detector",
        action="store_true",
        help="also read the B-ALL test fields with device.cells (detector + crop_cell)",
    )
    p.add_argument("--limit", type=int, default=0, help="about N test crops (evenly spaced; smoke runs)")
    args = p.parse_args(argv)
    try:
        doc = run(args)
    except (SmearscopeError, OSError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    atomic_write_bytes(out.with_suffix(".json"), (json.dumps(doc, indent=1) + "\n").encode())
    atomic_write_bytes(out.with_suffix(".md"), markdown(doc).encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
