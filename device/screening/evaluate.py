"""Measuring a cell ensemble on a folder of label folders (`smearscope evaluate`).

Two kinds of folder:

- **fields** (e.g. the B-ALL layout Benign/Early/Pre/Pro, or any dataset with a `labels.json`): each
  image is screened the station's way (`CellScreen.screen`) and judged by the call the station stores
  for that field (`device/screening/result.py`, the record's label rule), mapped to the image's label
  folder by the folder labels' malignant flags:
    - a folder that is not malignant: right when the field's call is a type that is not a blast and not
      abstained; confidently wrong when a blast is called;
    - a malignant folder: right when the field's call is a blast; confidently wrong when the call is
      a type that is not a blast and not abstained;
    - anything else (abstained; no white cell; a refused frame) is uncertain.
  Whether a called blast's subtype names the folder (`subtype_matches`) is reported apart; it does not
  change the call's being right.
- **cells** (every folder a label of the bundle): each image is one cell at the bundle's input scale,
  cut as the classifier's input is (`device.cells.crop.model_input` from a white-referenced frame, as
  training cuts its crops; centre-cropped or reflect-padded to the input size, never resized, and not
  white-referenced again); each is classified and decided
  (`device.cells.decide`) as the station does a detected cell's crop, and judged on the blast side
  (blast or not) and on its named type.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from device.cells.decide import BLAST, NOT_BLAST, UNCLASSIFIED, decide
from device.datasets.folders import Item, list_class_folders, scan
from device.datasets.labels import read_labels
from device.datasets.metrics import report
from device.errors import SmearscopeError
from device.models.bundle import Label
from device.optics.analyse import AUTO, ScaleArg, auto_scale
from device.preprocess import read_image
from device.screening.screen import CellScreen
from device.screening.stages import COUNTED, FieldCells
from device.screening.stages import REFUSED as REFUSED_STATE

FIELDS = "fields"
CELLS = "cells"
CELL_IMAGES = "cell-images"

RIGHT = "right"
UNCERTAIN = "uncertain"
WRONG = "confidently_wrong"

FIELD_RULE = (
    "per image, the station's own call for the field (the record's label rule, with the bundle's field "
    "rule when it has one, and the field models' second reading of a field the cells leave uncertain "
    "when the station has one): a folder that is not malignant is right when the record calls no blast and "
    "does not abstain, a malignant folder is right when it calls a blast; the opposite call, not "
    "abstained, is confidently wrong; an abstained field, no white cell or a refused frame is "
    "uncertain; the called blast's subtype is reported apart"
)
CELL_IMAGE_RULE = (
    "per single-cell picture at its own scale (given or auto): screened as the station screens a frame, "
    "its white cell nearest the centre judged as a crop is (right on the blast side when blast / not "
    "blast matches the folder label's malignant flag; unclassified, a refused frame or no white cell "
    "found is uncertain); the named type is scored apart"
)
SET_SCALE_RULE = (
    "with auto scale, the set is one camera and magnification: every picture is screened at the median "
    "of the pictures' red-cell scale estimates (one picture's few red cells vary by +-15%), and its own "
    "red cells are checked against it (a picture that clearly disagrees is refused)"
)
CELL_RULE = (
    "per cell crop, the station's decision (device.cells.decide): right on the blast side when blast / "
    "not blast matches the folder label's malignant flag; an unclassified cell is uncertain; the named "
    "type is scored apart (a cell whose type is not named counts as not named)"
)


def data_kind(folders: Sequence[str], labels: Sequence[Label]) -> str:
    """CELLS when every folder is a label of the bundle, else FIELDS."""
    ids = {lb.id for lb in labels}
    return CELLS if all(f in ids for f in folders) else FIELDS


def folder_malignancy(data: Path, folders: Sequence[str], malignant: Sequence[str] | None) -> dict[str, bool]:
    """Each field folder's malignant flag: from `--malignant` (the folders named are malignant, the
    rest not), else the dataset's `labels.json`. No list in code says which names are malignant."""
    if malignant is not None:
        unknown = sorted(set(malignant) - set(folders))
        if unknown:
            raise SmearscopeError(f"--malignant names folder(s) {', '.join(unknown)} not in {data}")
        return {f: f in malignant for f in folders}
    declared = read_labels(data)
    if declared is None:
        raise SmearscopeError(
            f"{data}: which label folders are malignant? Add a labels.json (smearscope-labels/1) or pass "
            f"--malignant with the malignant folders (its folders: {', '.join(folders)})"
        )
    missing = [f for f in folders if f not in declared]
    if missing:
        raise SmearscopeError(f"{data}/labels.json does not declare folder(s) {', '.join(missing)}")
    return {f: declared[f].malignant for f in folders}


def _norm(name: str) -> str:
    n = name.strip().lower().replace("-", "_").replace(" ", "_")
    return n.removeprefix("blast_")


def subtype_matches(folder: str, label: str | None) -> bool:
    """A called blast label names the folder: equal ignoring case, '-'/' ' vs '_' and a `blast_`
    prefix (B-ALL 'Early' ~ 'blast_early')."""
    return label is not None and _norm(folder) == _norm(label)


@dataclass(frozen=True)
class FieldVerdict:
    path: str
    folder: str
    malignant: bool
    state: str  # the field's state: counted | no_cells | refused
    label: str  # the record's label
    abstained: bool
    reason: str | None
    call: str  # "blast" | "no_blast" | "uncertain"
    outcome: str  # RIGHT | UNCERTAIN | WRONG
    subtype_match: bool | None  # a blast called on a malignant folder: does its label name the folder
    white_cells: int
    blasts: int
    second: str | None = None  # the second reading: None (not read), "called", or its state

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def field_verdict(
    path: str, folder: str, malignant: bool, fc: FieldCells, labels: Sequence[Label]
) -> FieldVerdict:
    """The image's outcome by `FIELD_RULE` from the station's own record label of the field."""
    blast_ids = {lb.id for lb in labels if lb.malignant}
    if fc.state != COUNTED or fc.abstained:
        call = UNCERTAIN
    else:
        call = BLAST if fc.label in blast_ids else "no_blast"
    if call == UNCERTAIN:
        outcome = UNCERTAIN
    elif (call == BLAST) == malignant:
        outcome = RIGHT
    else:
        outcome = WRONG
    match = subtype_matches(folder, fc.label) if malignant and call == BLAST else None
    diff = fc.differential
    return FieldVerdict(
        path, folder, malignant, fc.state, fc.label, fc.abstained, fc.reason, call, outcome, match,
        len(fc.white_records), diff.blasts if diff is not None else 0,
        None if fc.second is None else "called" if fc.second.decided else fc.second.state,
    )  # fmt: skip


def _rates(outcomes: Sequence[str]) -> dict[str, Any]:
    n = len(outcomes)
    c = Counter(outcomes)
    decided = c[RIGHT] + c[WRONG]
    return {
        "n": n,
        "right": c[RIGHT],
        "uncertain": c[UNCERTAIN],
        "confidently_wrong": c[WRONG],
        "accuracy": c[RIGHT] / n if n else None,
        "uncertain_rate": c[UNCERTAIN] / n if n else None,
        "confidently_wrong_rate": c[WRONG] / n if n else None,
        "accuracy_when_decided": c[RIGHT] / decided if decided else None,
    }


def _items(data: Path, folders: list[str]) -> list[Item]:
    items, _ = scan(data, labels=folders, dedupe=False)
    if not items:
        raise SmearscopeError(f"{data}: no images found")
    return items


def _progress(items: list[Item], progress: bool, what: str) -> Iterator[Item]:
    return iter(tqdm(items, desc=what, unit="img", disable=not progress, file=sys.stderr))


def screen_set(
    screen: CellScreen, items: Sequence[Item], scale: ScaleArg, progress: bool, what: str
) -> tuple[list[FieldCells], dict[str, Any] | None]:
    """Each item screened the station's way. With auto scale (`scale` "auto" or None) the set's scale is
    the median of its pictures' red-cell estimates, and every picture is screened at it, its own red
    cells checked against it (`SET_SCALE_RULE`). Returns the fields and what the set's scale was."""
    if scale not in (None, AUTO):
        return [screen.screen(read_image(it.path), scale) for it in _progress(items, progress, what)], None
    acq = screen.settings.acquisition
    measured = [
        auto_scale(read_image(it.path), acq, screen.estimator)[0]
        for it in _progress(items, progress, "measure scales")
    ]
    known = [um for um in measured if um]
    if not known:
        return [screen.screen(read_image(it.path), scale) for it in _progress(items, progress, what)], None
    um = float(np.median(known))
    fields = [
        screen.screen(read_image(it.path), um, source="given") for it in _progress(items, progress, what)
    ]
    return fields, {
        "um_per_px": round(um, 5),
        "from": len(known),
        "pictures": len(items),
        "rule": SET_SCALE_RULE,
    }


def evaluate_fields(
    screen: CellScreen,
    data: Path,
    *,
    scale: ScaleArg = None,
    malignant: Sequence[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Per image the station's call from its cells, and the image-level figures (`FIELD_RULE`)."""
    folders = list_class_folders(data)
    flags = folder_malignancy(data, folders, malignant)
    labels = screen.ensemble.labels
    items = _items(data, folders)
    fields, set_scale = screen_set(screen, items, scale, progress, "evaluate fields")
    verdicts = [
        field_verdict(str(it.path), it.label, flags[it.label], fc, labels)
        for it, fc in zip(items, fields, strict=True)
    ]
    out: dict[str, Any] = {"kind": FIELDS, "rule": FIELD_RULE, **_rates([v.outcome for v in verdicts])}
    out["set_scale"] = set_scale
    out["per_folder"] = {
        f: {"malignant": flags[f], **_rates([v.outcome for v in verdicts if v.folder == f])} for f in folders
    }
    blasts = [v for v in verdicts if v.subtype_match is not None]
    out["subtype"] = {
        "blasts_called_on_malignant": len(blasts),
        "subtype_matches": sum(bool(v.subtype_match) for v in blasts),
    }
    out["states"] = dict(Counter(v.state for v in verdicts))
    out["uncertain_reasons"] = dict(
        Counter(
            (v.reason or v.state).split(" (")[0][:80] for v in verdicts if v.outcome == UNCERTAIN
        ).most_common(8)
    )
    read = [v for v in verdicts if v.second is not None]
    called = [v for v in read if v.second == "called"]
    out["second_reading"] = {
        "models": list(screen.reader.ensemble.names) if screen.reader is not None else [],
        "read": len(read),
        "called": len(called),
        "called_right": sum(v.outcome == RIGHT for v in called),
        "called_wrong": sum(v.outcome == WRONG for v in called),
    }
    out["um_per_px"] = scale
    out["images"] = [v.to_dict() for v in verdicts]
    return out


def fit_crop(rgb: np.ndarray, size: int) -> np.ndarray:
    """A cell crop at the bundle's input scale made `size` x `size`: centre-cropped where larger,
    reflect-padded where smaller (never resized: the pixels keep their µm)."""
    h, w = rgb.shape[:2]
    y0, x0 = max(0, (h - size) // 2), max(0, (w - size) // 2)
    out = rgb[y0 : y0 + size, x0 : x0 + size]
    ph, pw = size - out.shape[0], size - out.shape[1]
    if ph or pw:
        out = cv2.copyMakeBorder(out, ph // 2, ph - ph // 2, pw // 2, pw - pw // 2, cv2.BORDER_REFLECT_101)
    return np.ascontiguousarray(out)


def are_crops(data: Path, size: int, sample: int = 20) -> bool:
    """The folder's images are the classifier's own crops (`size` x `size`, as training cuts them),
    judged on up to `sample` images per folder; any other size is a picture at its own scale."""
    for folder in list_class_folders(data):
        for it in _items(data, [folder])[:sample]:
            h, w = read_image(it.path).shape[:2]
            if (h, w) != (size, size):
                return False
    return True


def _cell_row(path: str, folder: str, state: str, label: str | None, p_blast: float, reason: str | None,
              malignant: bool) -> dict[str, Any]:  # fmt: skip
    outcome = UNCERTAIN if state == UNCLASSIFIED else RIGHT if (state == BLAST) == malignant else WRONG
    return {"path": path, "folder": folder, "state": state, "label": label, "p_blast": round(p_blast, 6),
            "outcome": outcome, "reason": reason}  # fmt: skip


def _central_white(fc: FieldCells):
    """The white cell nearest the image's centre (a single-cell image's cell), or None."""
    whites = fc.white_records
    if not whites:
        return None
    w, h = fc.prepared.frame_size
    return min(whites, key=lambda r: (r.x - w / 2) ** 2 + (r.y - h / 2) ** 2)


def evaluate_cell_images(
    screen: CellScreen, data: Path, *, scale: ScaleArg = None, progress: bool = True
) -> dict[str, Any]:
    """Per-cell figures on single-cell pictures at their own scale (`scale`: given or auto), named by
    the bundle's labels: each is screened as the station screens a frame, and its white cell nearest
    the centre is judged (`CELL_IMAGE_RULE`); a refused frame or one without a white cell is
    uncertain."""
    folders = list_class_folders(data)
    malignant = {lb.id: bool(lb.malignant) for lb in screen.ensemble.labels}
    per_cell = []
    items = _items(data, folders)
    fields, set_scale = screen_set(screen, items, scale, progress, "evaluate cell images")
    for it, fc in zip(items, fields, strict=True):
        r = _central_white(fc) if fc.state == COUNTED else None
        if r is None:
            why = fc.reason if fc.state == REFUSED_STATE else "no white cell found"
            per_cell.append(
                _cell_row(str(it.path), it.label, UNCLASSIFIED, None, 0.0, why, malignant[it.label])
            )
        else:
            per_cell.append(
                _cell_row(str(it.path), it.label, r.state, r.label, r.p_blast, r.reason, malignant[it.label])
            )
    out = _cell_figures(per_cell, screen.ensemble.labels, folders)
    out["rule"] = CELL_IMAGE_RULE
    out["set_scale"] = set_scale
    out["images"] = "pictures at their own scale"
    return out


def evaluate_cells(
    screen: CellScreen, data: Path, *, progress: bool = True, batch: int = 32
) -> dict[str, Any]:
    """Per-cell figures on a folder of single-cell crops named by the bundle's labels (`CELL_RULE`)."""
    folders = list_class_folders(data)
    labels = screen.ensemble.labels
    malignant = {lb.id: bool(lb.malignant) for lb in labels}
    items = _items(data, folders)
    size = screen.classifier.size
    per_cell = []
    for start in range(0, len(items), batch):
        chunk = items[start : start + batch]
        crops = [fit_crop(read_image(it.path), size) for it in chunk]
        preds = screen.ensemble.classify_tiles(crops, with_cam=False, batch=True)
        for it, pred in zip(chunk, preds, strict=True):
            unfamiliar = "; ".join(pred.unfamiliar) if pred.unfamiliar else None
            d = decide(pred.probabilities, labels, screen.classifier.spec, unfamiliar=unfamiliar)
            per_cell.append(
                _cell_row(str(it.path), it.label, d.state, d.label, d.p_blast, d.reason, malignant[it.label])
            )
        if progress:
            print(f"evaluate cells: {min(start + batch, len(items))}/{len(items)}", file=sys.stderr)
    out = _cell_figures(per_cell, labels, folders)
    out["images"] = "crops at the classifier's input scale"
    return out


def _cell_figures(
    per_cell: list[dict[str, Any]], labels: Sequence[Label], folders: list[str]
) -> dict[str, Any]:
    ids = [lb.id for lb in labels]
    malignant = {lb.id: bool(lb.malignant) for lb in labels}
    outcomes = [c["outcome"] for c in per_cell]
    states = Counter(c["state"] for c in per_cell)
    named = [c for c in per_cell if c["state"] != UNCLASSIFIED and c["label"] is not None]
    y_true = [ids.index(c["folder"]) for c in named]
    y_pred = [ids.index(c["label"]) for c in named]
    out: dict[str, Any] = {"kind": CELLS, "rule": CELL_RULE, **_rates(outcomes)}
    truth_blast = np.array([malignant[c["folder"]] for c in per_cell])
    called = np.array([c["state"] for c in per_cell])
    read = called != UNCLASSIFIED
    out["blast_sensitivity"] = (
        float((called[truth_blast & read] == BLAST).mean()) if (truth_blast & read).any() else None
    )
    out["blast_specificity"] = (
        float((called[~truth_blast & read] == NOT_BLAST).mean()) if (~truth_blast & read).any() else None
    )
    out["states"] = dict(states)
    out["types"] = report(y_true, y_pred, ids) if y_true else None
    out["type_named"] = len(y_true)
    out["per_folder"] = {f: _rates([c["outcome"] for c in per_cell if c["folder"] == f]) for f in folders}
    out["cells"] = per_cell
    return out
