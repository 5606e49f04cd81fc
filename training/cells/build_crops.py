"""Build the cell-crop dataset: `python -m training.cells.build_crops --ball DIR --pbc DIR --out DIR`.

Writes `OUT/<label>/<lab>.<image>.<n>.png` (one white cell each, at one physical scale and at the B-ALL
pitch's detail: training/cells/crops.py), `labels.json` (every label and whether it is a blast:
device/datasets/labels.py) and `crops.json` (per crop: source lab, source image, cell box in the
source image, split group = the source image, whether it is a stain copy). Every crop of one source image
shares the first two dot-separated parts of its file name, so `smearscope train --group-regex
'^([^.]+\\.[^.]+)\\.'` keeps an image's crops on one side of the split.

Label scheme (weak, multiple-instance supervision: a B-ALL folder names the image, not each cell):
- B-ALL `Benign` (hematogones): every white cell -> `hematogone` (not a blast);
- B-ALL `Early` / `Pre` / `Pro`: every white cell -> `blast_early` / `blast_pre` / `blast_pro` (blasts);
- PBC `<type>`: the centred cell -> `<type>` (not a blast).
`training.cells.screen` afterwards drops B-ALL crops that a classifier trained on PBC alone calls a
non-lymphoid normal type (a neutrophil beside the blasts must not be taught as a blast).

Colour: every source image is white-referenced first (device.colour, as the station does before
it crops). `--stain-copies F` adds, for a fraction F of the crops, a copy moved onto the Reinhard
statistics of a random crop of the OTHER lab (training/cells/stain.py), so colour cannot tell the labs
apart; copies share their original's group and are marked in the manifest.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from device.cells.crop import model_input
from device.cells.detect import WHITE, Cell, detect_cells
from device.datasets.labels import DatasetLabel, write_labels
from device.errors import ImageError, SmearscopeError
from device.fsutil import atomic_write_bytes
from device.preprocess import apply_white_reference, read_image
from training.cells.crops import BALL_UM_PER_PX, PBC_UM_PER_PX, CropSpec, crop_box, leaves_image
from training.cells.stain import lab_stats, reinhard

log = logging.getLogger("smearscope.cells")

#: Not "manifest.json": that name marks a hub export to `smearscope train` (training/sources.py).
MANIFEST = "crops.json"
MANIFEST_FORMAT = "smearscope-cell-crops/1"
GROUP_REGEX = r"^([^.]+\.[^.]+)\."
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}

#: B-ALL folder -> (cell label, display, blast). The image's class, given to each of its white cells.
BALL_LABELS: dict[str, tuple[str, str, bool]] = {
    "Benign": ("hematogone", "Hematogone (benign B-cell precursor)", False),
    "Early": ("blast_early", "Blast (early pre-B ALL)", True),
    "Pre": ("blast_pre", "Blast (pre-B ALL)", True),
    "Pro": ("blast_pro", "Blast (pro-B ALL)", True),
}
#: PBC folder -> display (all normal cells of healthy donors).
PBC_LABELS: dict[str, str] = {
    "basophil": "Basophil",
    "eosinophil": "Eosinophil",
    "erythroblast": "Erythroblast",
    "ig": "Immature granulocyte",
    "lymphocyte": "Lymphocyte",
    "monocyte": "Monocyte",
    "neutrophil": "Neutrophil",
    "platelet": "Platelet",
}

#: Named by the classifier but not white cells: listed, never counted in a differential.
NOT_WHITE = frozenset({"platelet", "erythroblast"})


@dataclass
class CropRecord:
    path: str  # relative to the dataset root
    label: str
    lab: str  # "ball" | "pbc"
    source_image: str  # relative to its dataset root
    source_class: str
    box: list[int]  # x0, y0, x1, y1 in the source image's pixels
    group: str
    copy_of: str | None = None  # a stain copy: the original crop's path
    detector: str | None = None
    edge: bool = False  # the crop square leaves the source image (its outside part is reflected)


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _write_png(path: Path, rgb: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise SmearscopeError(f"{path}: PNG encoding failed")
    atomic_write_bytes(path, buf.tobytes())


def _white_referenced(root: Path, folders: list[str], flag: str, limit: int | None, stats: dict):
    """(folder, path, white-referenced RGB) of each readable image of each label folder; unreadable
    files are skipped and counted."""
    for folder in folders:
        if not (root / folder).is_dir():
            raise SmearscopeError(f"{flag} {root}: no {folder}/ folder")
        for img_path in _images(root / folder)[:limit]:
            try:
                rgb = apply_white_reference(read_image(img_path), "background")
            except ImageError as exc:
                log.warning("skipped: %s", exc)
                stats["unreadable"] += 1
                continue
            yield folder, img_path, rgb


def cell_input(rgb: np.ndarray, cell: Cell, um_per_px: float, spec: CropSpec) -> np.ndarray:
    """The crop of `cell` exactly as the station makes it (`device.cells.crop.model_input`)."""
    return model_input(
        rgb, cell, um_per_px, size=spec.size, input_um_per_px=spec.um_per_px, pitch_um=spec.pitch_um
    )


def white_cells(rgb: np.ndarray, um_per_px: float) -> list[Cell]:
    """The white cells of a white-referenced field, found by the station's detector."""
    return [c for c in detect_cells(rgb, um_per_px) if c.kind == WHITE]


def ball_crops(root: Path, out: Path, spec: CropSpec, um_per_px: float, limit: int | None, stats: dict):
    for folder, img_path, rgb in _white_referenced(root, list(BALL_LABELS), "--ball", limit, stats):
        label = BALL_LABELS[folder][0]
        cells = white_cells(rgb, um_per_px)
        stats["ball_images"] += 1
        stats["ball_cells_found"] += len(cells)
        if not cells:
            stats["ball_images_without_cells"] += 1
        group = f"ball.{img_path.stem}"
        for i, c in enumerate(cells):
            box = crop_box(c.x, c.y, um_per_px, spec.side_um)
            edge = leaves_image(box, rgb.shape)
            stats["ball_cells_at_edge"] += edge
            crop = cell_input(rgb, c, um_per_px, spec)
            rel = f"{label}/{group}.{i}.png"
            _write_png(out / rel, crop)
            yield (
                CropRecord(
                    rel,
                    label,
                    "ball",
                    f"{folder}/{img_path.name}",
                    folder,
                    list(box),
                    group,
                    detector="device.cells.detect",
                    edge=edge,
                ),
                crop,
            )


def pbc_crops(root: Path, out: Path, spec: CropSpec, um_per_px: float, limit: int | None, stats: dict):
    for folder, img_path, rgb in _white_referenced(root, list(PBC_LABELS), "--pbc", limit, stats):
        h, w = rgb.shape[:2]
        # the named cell is centred in every PBC image; its box is the crop's (no detector needed)
        box = crop_box(w / 2, h / 2, um_per_px, spec.side_um)
        centred = Cell(w / 2, h / 2, box, 0.0, 0.0, WHITE, 1.0, touches_edge=False)
        edge = leaves_image(box, rgb.shape)
        stats["pbc_images"] += 1
        stats["pbc_at_edge"] += edge
        crop = cell_input(rgb, centred, um_per_px, spec)
        group = f"pbc.{img_path.stem}"
        rel = f"{folder}/{group}.0.png"
        _write_png(out / rel, crop)
        yield (
            CropRecord(rel, folder, "pbc", f"{folder}/{img_path.name}", folder, list(box), group, edge=edge),
            crop,
        )


def add_stain_copies(
    out: Path, records: list[CropRecord], crops: dict[str, np.ndarray], fraction: float, rng: random.Random
) -> list[CropRecord]:
    """For a fraction of the crops, a copy on the Reinhard statistics of a random crop of the other lab."""
    by_lab: dict[str, list[CropRecord]] = {}
    for r in records:
        by_lab.setdefault(r.lab, []).append(r)
    if len(by_lab) < 2 or fraction <= 0:
        return []
    copies = []
    for r in records:
        if rng.random() >= fraction:
            continue
        other = [lab for lab in by_lab if lab != r.lab]
        donor = rng.choice(by_lab[rng.choice(other)])
        rgb = reinhard(crops[r.path], lab_stats(crops[donor.path]))
        rel = r.path[: -len(".png")] + ".rh.png"
        _write_png(out / rel, rgb)
        copies.append(
            CropRecord(
                rel,
                r.label,
                r.lab,
                r.source_image,
                r.source_class,
                r.box,
                r.group,
                copy_of=r.path,
                detector=r.detector,
                edge=r.edge,
            )
        )
    return copies


def build(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    if out.exists():
        if not (out / MANIFEST).is_file():
            raise SmearscopeError(f"--out {out} exists and is not a crop dataset: refusing to overwrite it")
        shutil.rmtree(out)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    spec = CropSpec(args.side_um, args.size, args.ball_um_per_px)
    stats = dict.fromkeys(
        [
            "unreadable",
            "ball_images",
            "ball_cells_found",
            "ball_images_without_cells",
            "ball_cells_at_edge",
            "pbc_images",
            "pbc_at_edge",
        ],
        0,
    )
    records: list[CropRecord] = []
    crops: dict[str, np.ndarray] = {}
    for gen in (
        ball_crops(Path(args.ball), tmp, spec, args.ball_um_per_px, args.limit, stats),
        pbc_crops(Path(args.pbc), tmp, spec, args.pbc_um_per_px, args.limit, stats),
    ):
        for rec, crop in gen:
            records.append(rec)
            crops[rec.path] = crop
    copies = add_stain_copies(tmp, records, crops, args.stain_copies, random.Random(args.seed))
    labels = [
        DatasetLabel(lb, disp, blast, f"B-ALL folder {folder}")
        for folder, (lb, disp, blast) in BALL_LABELS.items()
    ]
    labels += [
        DatasetLabel(lb, disp, False, f"PBC folder {lb}", white=lb not in NOT_WHITE)
        for lb, disp in PBC_LABELS.items()
    ]
    write_labels(tmp, labels)
    per_label: dict[str, int] = {}
    for r in records:
        per_label[r.label] = per_label.get(r.label, 0) + 1
    doc = {
        "format": MANIFEST_FORMAT,
        "crop": {**asdict(spec), "um_per_px_at_input": spec.um_per_px},
        "sources": {
            "ball": {"path": str(args.ball), "um_per_px": args.ball_um_per_px},
            "pbc": {"path": str(args.pbc), "um_per_px": args.pbc_um_per_px},
        },
        "white_reference": "background (each source image, before cropping)",
        "group_regex": GROUP_REGEX,
        "stain_copies": args.stain_copies,
        "seed": args.seed,
        "counts": {
            **stats,
            "crops": len(records),
            "stain_copies_written": len(copies),
            "per_label": per_label,
        },
        "crops": [asdict(r) for r in records + copies],
    }
    atomic_write_bytes(tmp / MANIFEST, (json.dumps(doc, indent=1) + "\n").encode())
    tmp.rename(out)
    return doc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m training.cells.build_crops", description=__doc__.split("\n")[0]
    )
    p.add_argument("--ball", required=True, help="B-ALL dataset (Benign/ Early/ Pre/ Pro/)")
    p.add_argument("--pbc", required=True, help="PBC normal-cell dataset (one folder per type)")
    p.add_argument("--out", required=True, help="crop dataset folder to (re)write")
    p.add_argument("--side-um", type=float, default=CropSpec.side_um, help="crop side in µm")
    p.add_argument("--size", type=int, default=CropSpec.size, help="crop side in px (the model's input)")
    p.add_argument("--ball-um-per-px", type=float, default=BALL_UM_PER_PX)
    p.add_argument("--pbc-um-per-px", type=float, default=PBC_UM_PER_PX)
    p.add_argument(
        "--stain-copies",
        type=float,
        default=0.5,
        metavar="F",
        help="fraction of crops that get a copy in the other lab's colour (default 0.5)",
    )
    p.add_argument("--limit", type=int, default=None, help="at most N images per folder (smoke tests)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        doc = build(args)
    except SmearscopeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(doc["counts"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
