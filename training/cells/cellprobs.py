"""A crop dataset's cells through the station's ensemble: the split's crops (and their cross-lab copies)
and the B-ALL fields as the station reads them, turned into probability tables that the threshold step
(`calibrate_cells`) and the figures (`evaluate`) share.

The ensemble is the device's (`device.models.ensemble.Ensemble`): temperature, soft vote, colour,
energy and content checks. A cell the checks find unfamiliar carries their reason, which
`device.cells.decide.decide` turns into "unclassified" whatever the probabilities say.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from device.cells.crop import model_input, resize_square
from device.cells.detect import WHITE, detect_cells
from device.errors import SmearscopeError
from device.models.ensemble import Ensemble
from device.preprocess import apply_white_reference, read_image
from training.cells.crops import CropSpec
from training.cells.stain import LabStats, lab_stats, mean_stats, reinhard

MANIFEST = "crops.json"
VARIANTS = ("original", "colour_to_other", "to_other_lab", "pbc_full_detail")
UNFAMILIAR_PREFIX = "input unlike the training images"


@dataclass
class SplitCrop:
    rel: str
    label: str
    lab: str  # "ball" | "pbc"
    source_image: str
    source_class: str
    box: list[int]
    edge: bool
    rgb: np.ndarray


@dataclass
class CellTable:
    """One row per cell: the ensemble's probabilities (label order `labels`), each member's, and the
    checks' reason when the cell is unfamiliar (None: familiar)."""

    labels: list[str]
    probs: np.ndarray  # (n, K) float
    members: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (n, K)
    unfamiliar: list[str | None] = field(default_factory=list)

    def rows(self) -> list[dict[str, float]]:
        return [dict(zip(self.labels, map(float, p), strict=True)) for p in self.probs]


def crop_spec(manifest: dict) -> CropSpec:
    return CropSpec(**{k: manifest["crop"][k] for k in ("side_um", "size", "pitch_um")})


def crops_root_of(run_dir: Path) -> Path:
    config = json.loads((run_dir / "config.json").read_text())
    return Path(config["data"] if isinstance(config["data"], str) else config["data"][0])


def _rel(crops_root: Path, path: str) -> str:
    """A split path relative to the crop dataset (split.json holds them as `--data` gave them)."""
    p = Path(path)
    try:
        return p.relative_to(crops_root).as_posix()
    except ValueError:
        return p.as_posix()


def load_part(crops_root: Path, split: dict, part: str) -> tuple[list[SplitCrop], dict]:
    """The original crops (stain copies left out) of split part `part` ("val" | "test") and the crop
    manifest."""
    manifest = json.loads((crops_root / MANIFEST).read_text())
    records = {r["path"]: r for r in manifest["crops"]}
    out = []
    for row in split[part]:
        r = records.get(_rel(crops_root, row["path"]))
        if r is None:
            raise SmearscopeError(f"{row['path']}: not in {crops_root}/{MANIFEST}")
        if r["copy_of"] is not None:
            continue
        out.append(
            SplitCrop(
                r["path"],
                r["label"],
                r["lab"],
                r["source_image"],
                r["source_class"],
                r["box"],
                bool(r.get("edge", False)),
                read_image(crops_root / r["path"]),
            )
        )
    return out, manifest


def lab_means(crops_root: Path, split: dict, manifest: dict, every: int = 8) -> dict[str, LabStats]:
    """Each lab's mean colour statistics over (every `every`-th of) its TRAINING crops: the targets of
    the cross-lab copies."""
    records = {r["path"]: r for r in manifest["crops"]}
    stats: dict[str, list[LabStats]] = defaultdict(list)
    for row in split["train"][::every]:
        r = records.get(_rel(crops_root, row["path"]))
        if r is not None and r["copy_of"] is None:
            stats[r["lab"]].append(lab_stats(read_image(crops_root / r["path"])))
    return {lab: mean_stats(s) for lab, s in stats.items()}


def sharpen(rgb: np.ndarray, sigma: float = 1.0, amount: float = 1.0) -> np.ndarray:
    blur = cv2.GaussianBlur(rgb.astype(np.float32), (0, 0), sigma)
    out = rgb.astype(np.float32) * (1 + amount) - blur * amount
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def variant_fn(
    name: str, means: dict[str, LabStats], manifest: dict
) -> Callable[[SplitCrop], np.ndarray | None]:
    """How a crop looks in variant `name` (module docstring of training/cells/evaluate.py); None: the
    variant does not apply to that crop."""
    other = {"pbc": "ball", "ball": "pbc"}
    spec = crop_spec(manifest)
    pbc_root = Path(manifest["sources"]["pbc"]["path"])

    def fn(c: SplitCrop) -> np.ndarray | None:
        if name == "original":
            return c.rgb
        if name == "colour_to_other":
            return reinhard(c.rgb, means[other[c.lab]])
        if name == "to_other_lab":
            moved = reinhard(c.rgb, means[other[c.lab]])
            return moved if c.lab == "pbc" else sharpen(moved)
        if name == "pbc_full_detail":
            if c.lab != "pbc":
                return None
            x0, y0, x1, y1 = c.box
            src = apply_white_reference(read_image(pbc_root / c.source_image), "background")
            return resize_square(np.ascontiguousarray(src[y0:y1, x0:x1]), spec.size)
        raise ValueError(name)

    return fn


def run_cells(ens: Ensemble, images: Sequence[np.ndarray], batch: int = 256) -> CellTable:
    """The ensemble on model-size crops, in batches (`Ensemble.classify_tiles`: same verdicts as
    `classify`)."""
    probs: list[np.ndarray] = []
    members: dict[str, list[np.ndarray]] = defaultdict(list)
    unfamiliar: list[str | None] = []
    for i in range(0, len(images), batch):
        for p in ens.classify_tiles(list(images[i : i + batch]), with_cam=False):
            probs.append(np.array([p.probabilities[lb] for lb in ens.label_ids], np.float32))
            for name, v in p.per_model.items():
                members[name].append(np.asarray(v, np.float32))
            bad = p.reason if p.reason and p.reason.startswith(UNFAMILIAR_PREFIX) else None
            unfamiliar.append(bad)
    k = len(ens.label_ids)
    return CellTable(
        list(ens.label_ids),
        np.stack(probs) if probs else np.zeros((0, k), np.float32),
        {n: np.stack(v) for n, v in members.items()},
        unfamiliar,
    )


@dataclass
class FieldCells:
    source_image: str
    truth: str  # the field's folder label as a cell label (hematogone, blast_early, ...)
    crops: list[np.ndarray]
    edge: list[bool]


def station_fields(
    source_images: Sequence[tuple[str, str]], manifest: dict, spec: CropSpec
) -> list[FieldCells]:
    """B-ALL fields as the station reads them: white reference, `detect_cells` (white cells, those at
    the border included) and `model_input`. `source_images`: (path relative to the B-ALL root, truth)."""
    um = float(manifest["sources"]["ball"]["um_per_px"])
    root = Path(manifest["sources"]["ball"]["path"])
    out = []
    for img, truth in source_images:
        rgb = apply_white_reference(read_image(root / img), "background")
        cells = [c for c in detect_cells(rgb, um) if c.kind == WHITE]
        crops = [
            model_input(rgb, c, um, size=spec.size, input_um_per_px=spec.um_per_px, pitch_um=spec.pitch_um)
            for c in cells
        ]
        out.append(FieldCells(img, truth, crops, [c.touches_edge for c in cells]))
    return out


def field_tables(ens: Ensemble, fields: Sequence[FieldCells]) -> list[CellTable]:
    """One CellTable per field (all of its cells in one batch)."""
    flat = [x for f in fields for x in f.crops]
    table = run_cells(ens, flat)
    out, i = [], 0
    for f in fields:
        n = len(f.crops)
        out.append(
            CellTable(
                table.labels,
                table.probs[i : i + n],
                {k: v[i : i + n] for k, v in table.members.items()},
                table.unfamiliar[i : i + n],
            )
        )
        i += n
    return out


def field_sources(crops: Sequence[SplitCrop]) -> list[tuple[str, str]]:
    """The B-ALL source images of a split part with their field label (as a cell label), sorted."""
    return sorted({(c.source_image, c.label) for c in crops if c.lab == "ball"})
