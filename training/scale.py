"""The physical scale of the training images, measured from their red cells (no TensorFlow).

`smearscope train` calls `measure_training_scale` when `--um-per-px` is not given; the result goes into
the run's config (`um_per_px`, which `convert` copies into `manifest.input.um_per_px`) and provenance
(`um_per_px_method`, `scale`: how it was measured). The value is at the MODEL's input size: a 224-px
image trained at 288 px has 224/288 of the image's µm/px.

Also a tool to measure it for a bundle whose manifest has no `input.um_per_px`:

    .venv/bin/python -m training.scale --split runs/split-all4-seed42.json --size 288 \\
        [--bundle models/NAME --write]   (--from MEASURED.json: reuse a measurement it printed)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from device.errors import ImageError
from device.optics.scale import RBC_DIAMETER_UM, estimate_scale
from device.preprocess import read_image

log = logging.getLogger("smearscope.train")

#: Images measured at most (a seeded sample of the training split): the median settles long before.
DEFAULT_LIMIT = 400
#: Fewer confident images than this: the scale is not recorded (unknown), rather than guessed.
MIN_CONFIDENT = 10


def model_pixels_per_image_pixel(shape: tuple[int, ...], size: tuple[int, int], resize: str) -> float:
    """How many model-input pixels one image pixel becomes under `device.preprocess.prepare`."""
    h, w = shape[:2]
    width, height = size
    if resize == "center_crop":
        # The largest centred region with the model's aspect is resized to the model's size.
        crop_w = min(w, h * width / height)
        return width / crop_w
    return float(np.sqrt((width / w) * (height / h)))  # stretch: the geometric mean of both axes


#: The spread and IQR are taken between these percentiles.
QUARTILES = (25, 50, 75)


def _sample(paths: Sequence[str | Path], limit: int, seed: int) -> list[str]:
    """At most `limit` of `paths`, a seeded sample kept in sorted order."""
    chosen = [str(p) for p in paths]
    if len(chosen) > limit:
        rng = np.random.default_rng(seed)
        chosen = sorted(rng.choice(chosen, size=limit, replace=False).tolist())
    return chosen


def _confident_estimates(
    chosen: list[str], size: tuple[int, int], resize: str, rbc_um: float
) -> tuple[list[float], list[float], int]:
    """(µm/px at the model's input, red-cell diameters in image px) of the images with a confident
    estimate, and how many images could not be read."""
    um_model: list[float] = []
    diameters: list[float] = []
    unreadable = 0
    for p in chosen:
        try:
            rgb = read_image(p)
        except ImageError:
            unreadable += 1
            continue
        est = estimate_scale(rgb, rbc_um=rbc_um)
        if not est.confident or not est.diameter_px:
            continue
        factor = model_pixels_per_image_pixel(rgb.shape, size, resize)
        diameters.append(est.diameter_px)
        um_model.append(rbc_um / (est.diameter_px * factor))
    return um_model, diameters, unreadable


def _measured(
    um_model: list[float], diameters: list[float], n_chosen: int, size: tuple[int, int], rbc_um: float
):
    """The median scale, its spread and the sentence for the provenance."""
    q1, med, q3 = np.percentile(np.asarray(um_model), QUARTILES)
    dq1, dmed, dq3 = np.percentile(np.asarray(diameters), QUARTILES)
    out: dict[str, Any] = {
        "um_per_px": round(float(med), 5),
        "um_per_px_iqr": [round(float(q1), 5), round(float(q3), 5)],
        "spread": round(float((q3 - q1) / med), 4),
        "diameter_px_images": {
            "median": round(float(dmed), 2),
            "iqr": [round(float(dq1), 2), round(float(dq3), 2)],
        },
    }
    out["method"] = (
        f"measured from the training images' red cells: median diameter {dmed:.1f} px in the images "
        f"(IQR {dq1:.1f}-{dq3:.1f}) over {len(um_model)} of {n_chosen} images, taking a red cell as "
        f"{rbc_um:g} µm, at the model's {size[0]}x{size[1]} input; relative spread between images "
        f"{out['spread']:.2f}"
    )
    return out


def measure_training_scale(
    paths: Sequence[str | Path],
    size: tuple[int, int],
    resize: str = "center_crop",
    *,
    rbc_um: float = RBC_DIAMETER_UM,
    limit: int = DEFAULT_LIMIT,
    seed: int = 0,
) -> dict[str, Any]:
    """Median µm/px at the model's input size over (a seeded sample of) `paths`, with its spread.

    Returns a JSON-able dict: `um_per_px` (None when fewer than MIN_CONFIDENT images gave a confident
    estimate), `method` (one sentence for the provenance and the model card) and the figures behind it.
    """
    chosen = _sample(paths, limit, seed)
    um_model, diameters, unreadable = _confident_estimates(chosen, size, resize, rbc_um)
    out: dict[str, Any] = {
        "estimator": "device.optics.scale.estimate_scale (red-cell granulometry)",
        "rbc_um": rbc_um,
        "images_measured": len(chosen) - unreadable,
        "images_confident": len(um_model),
        "model_input": list(size),
        "resize": resize,
    }
    if len(um_model) < MIN_CONFIDENT:
        out["um_per_px"] = None
        out["method"] = (
            f"could not be measured: only {len(um_model)} of {len(chosen)} training images showed enough red "
            f"cells (at least {MIN_CONFIDENT} needed); give --um-per-px"
        )
        return out
    out.update(_measured(um_model, diameters, len(chosen), size, rbc_um))
    return out


def given_scale(um_per_px: float) -> dict[str, Any]:
    return {"um_per_px": float(um_per_px), "method": "given on the command line (--um-per-px)"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Measure the training images' µm/px (at the model's input size)")
    ap.add_argument("--split", type=Path, help="a run's split.json")
    ap.add_argument("--from", dest="from_json", type=Path, help="use a measurement this tool printed earlier")
    ap.add_argument("--part", default="train")
    ap.add_argument("--size", type=int, required=True, help="the model's input side (px)")
    ap.add_argument("--resize", default="center_crop", choices=("center_crop", "stretch"))
    ap.add_argument("--limit", type=int, default=DEFAULT_LIMIT)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bundle", type=Path, action="append", default=[], help="bundle dir(s) to update")
    ap.add_argument("--write", action="store_true", help="write input.um_per_px into the bundles' manifests")
    args = ap.parse_args(argv)
    if args.from_json:
        scale = json.loads(args.from_json.read_text())
        if scale.get("model_input") != [args.size, args.size]:
            ap.error(f"{args.from_json} was measured for {scale.get('model_input')}, not --size {args.size}")
    elif args.split:
        split = json.loads(args.split.read_text())
        paths = [row["path"] for row in split[args.part]]
        scale = measure_training_scale(
            paths, (args.size, args.size), args.resize, limit=args.limit, seed=args.seed
        )
    else:
        ap.error("give --split FILE (or --from FILE)")
    print(json.dumps(scale, indent=2))
    if args.write and scale["um_per_px"] is not None:
        from dataclasses import replace

        from convert.bundle import update_manifest
        from convert.card import write_card
        from device.models.bundle import read_manifest

        for b in args.bundle:
            man = read_manifest(b)
            provenance = {**man.provenance, "um_per_px_method": scale["method"], "scale": scale}
            update_manifest(b, input=replace(man.input, um_per_px=scale["um_per_px"]), provenance=provenance)
            write_card(b)
            print(f"{b}: input.um_per_px = {scale['um_per_px']}", file=sys.stderr)
    return 0 if scale["um_per_px"] is not None else 1


if __name__ == "__main__":
    raise SystemExit(main())
