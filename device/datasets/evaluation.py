"""Measuring a field classifier on a folder of label folders: the same path as `classify` and the
daemon (per image a field result: tiles + field rule). Reported: accuracy (the field's arg-max label, an
image not classified counts as wrong), the "uncertain" rate (abstained, no white cells, or not
classified) and the confidently-wrong rate (not abstained, wrong). Used by `smearscope evaluate` and
convert's model-card figures."""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from device.datasets.folders import list_class_folders, scan
from device.datasets.metrics import report
from device.errors import SmearscopeError
from device.models.ensemble import Ensemble
from device.optics.analyse import AcquisitionSettings, FieldClassifier, ScaleArg
from device.preprocess import read_image

#: An uncertain reason is counted by its first words (before " (") cut to this many characters.
REASON_CHARS = 80
#: The report lists this many of the most frequent uncertain reasons.
TOP_REASONS = 8


@dataclass
class _Tally:
    """Per image, in order: the true and predicted label index (-1: not classified), abstention; and
    the counts the report shows beside the metrics."""

    y_true: list[int] = field(default_factory=list)
    y_pred: list[int] = field(default_factory=list)
    abstained: list[bool] = field(default_factory=list)
    states: Counter[str] = field(default_factory=Counter)
    checks: Counter[str] = field(default_factory=Counter)
    tiles: list[int] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)

    def add(self, true: int, analysis, index: dict[str, int]) -> None:
        fr = analysis.field
        self.states[fr.state] += 1
        c = analysis.prepared.check
        self.checks["ok" if c.ran and c.ok else ("mismatch" if not c.ok else "not run")] += 1
        if c.ratio is not None:
            self.ratios.append(c.ratio)
        if analysis.prepared.plan is not None:
            self.tiles.append(len(analysis.prepared.plan.selected))
        if fr.abstained and fr.reason:
            self.reasons[fr.reason.split(" (")[0][:REASON_CHARS]] += 1
        self.y_true.append(true)
        self.y_pred.append(index[fr.label] if fr.label else -1)
        self.abstained.append(fr.abstained)


def _checked_items(ensemble: Ensemble, data: Path) -> list:
    """The images of `data`'s label folders; every folder must be a label of the model."""
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
    return items


def _metrics(t: _Tally, label_ids: list[str]) -> dict:
    yt, yp, ab = np.array(t.y_true), np.array(t.y_pred), np.array(t.abstained)
    labelled = yp >= 0
    out = report(yt[labelled], yp[labelled], label_ids)
    correct = yt == yp
    kept = ~ab
    out["n"] = len(t.y_true)
    out["accuracy"] = float(correct.mean())
    out["not_classified"] = int((~labelled).sum())
    out["abstained"] = int(ab.sum())
    out["abstain_rate"] = float(ab.mean())
    out["accuracy_when_not_abstained"] = float(correct[kept].mean()) if kept.any() else None
    out["confidently_wrong"] = int((kept & ~correct).sum())
    out["confidently_wrong_rate"] = float((kept & ~correct).mean())
    out["states"] = dict(t.states)
    out["scale_check"] = dict(t.checks)
    out["scale_ratio_median"] = float(np.median(t.ratios)) if t.ratios else None
    out["tiles_per_image_mean"] = float(np.mean(t.tiles)) if t.tiles else None
    out["uncertain_reasons"] = dict(t.reasons.most_common(TOP_REASONS))
    return out


def evaluate(
    fields: FieldClassifier | Ensemble, data: Path, *, scale: ScaleArg = None, progress: bool = True
) -> dict:
    """Metrics of the field results on a folder of label folders. A bare Ensemble (convert's model-card
    figures on the test split, which is at the models' scale by construction) gets the default tiling
    without the per-image red-cell check."""
    if isinstance(fields, Ensemble):
        fields = FieldClassifier(fields, AcquisitionSettings(scale_check=False))
    ensemble = fields.ensemble
    items = _checked_items(ensemble, data)
    index = {lb: i for i, lb in enumerate(ensemble.label_ids)}
    tally = _Tally()
    for it in tqdm(items, desc="evaluate", unit="img", disable=not progress, file=sys.stderr):
        tally.add(index[it.label], fields.analyse(read_image(it.path), scale), index)
    out = _metrics(tally, ensemble.label_ids)
    out["um_per_px"] = scale
    out["models_um_per_px"] = fields.spec.um_per_px
    out["models"] = [{"name": m.manifest.name, "sha256": m.manifest.sha256} for m in ensemble.models]
    out["data"] = str(data)
    return out
