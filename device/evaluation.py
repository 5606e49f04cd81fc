"""Measuring a field classifier on a folder of label folders: the same path as `classify` and the
daemon (per image a field result: tiles + field rule). Reported: accuracy (the field's arg-max label, an
image not classified counts as wrong), the "uncertain" rate (abstained, no white cells, or not
classified) and the confidently-wrong rate (not abstained, wrong). Used by `smearscope evaluate` and
convert's model-card figures."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

from device.dataset import list_class_folders, scan
from device.errors import SmearscopeError
from device.metrics import report
from device.models.ensemble import Ensemble
from device.optics.analyse import AcquisitionSettings, FieldClassifier, ScaleArg
from device.preprocess import read_image


def evaluate(
    fields: FieldClassifier | Ensemble, data: Path, *, scale: ScaleArg = None, progress: bool = True
) -> dict:
    """Metrics of the field results on a folder of label folders. A bare Ensemble (convert's model-card
    figures on the test split, which is at the models' scale by construction) gets the default tiling
    without the per-image red-cell check, i.e. exactly the old centre crop."""
    if isinstance(fields, Ensemble):
        fields = FieldClassifier(fields, AcquisitionSettings(scale_check=False))
    ensemble = fields.ensemble
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
    states: Counter[str] = Counter()
    checks: Counter[str] = Counter()
    tiles: list[int] = []
    ratios: list[float] = []
    reasons: Counter[str] = Counter()
    for it in tqdm(items, desc="evaluate", unit="img", disable=not progress, file=sys.stderr):
        a = fields.analyse(read_image(it.path), scale)
        fr = a.field
        states[fr.state] += 1
        c = a.prepared.check
        checks["ok" if c.ran and c.ok else ("mismatch" if not c.ok else "not run")] += 1
        if c.ratio is not None:
            ratios.append(c.ratio)
        if a.prepared.plan is not None:
            tiles.append(len(a.prepared.plan.selected))
        if fr.abstained and fr.reason:
            reasons[fr.reason.split(" (")[0][:80]] += 1
        y_true.append(index[it.label])
        y_pred.append(index[fr.label] if fr.label else -1)
        abstained.append(fr.abstained)
    yt, yp, ab = np.array(y_true), np.array(y_pred), np.array(abstained)
    labelled = yp >= 0
    out = report(yt[labelled], yp[labelled], ensemble.label_ids)
    correct = yt == yp
    kept = ~ab
    out["n"] = len(items)
    out["accuracy"] = float(correct.mean())
    out["not_classified"] = int((~labelled).sum())
    out["abstained"] = int(ab.sum())
    out["abstain_rate"] = float(ab.mean())
    out["accuracy_when_not_abstained"] = float(correct[kept].mean()) if kept.any() else None
    out["confidently_wrong"] = int((kept & ~correct).sum())
    out["confidently_wrong_rate"] = float((kept & ~correct).mean())
    out["states"] = dict(states)
    out["scale_check"] = dict(checks)
    out["scale_ratio_median"] = float(np.median(ratios)) if ratios else None
    out["tiles_per_image_mean"] = float(np.mean(tiles)) if tiles else None
    out["uncertain_reasons"] = dict(reasons.most_common(8))
    out["um_per_px"] = scale
    out["models_um_per_px"] = fields.spec.um_per_px
    out["models"] = [{"name": m.manifest.name, "sha256": m.manifest.sha256} for m in ensemble.models]
    out["data"] = str(data)
    return out
