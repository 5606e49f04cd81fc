"""The acquisition evaluation table (issue 10): the test split rendered as other cameras would see it,
classified through `smearscope evaluate`'s path with the right `--um-per-px`, with `auto`, and
(optionally) without the option (today's centre crop + scale check).

    .venv/bin/python benchmarks/acquisition_eval.py [--data DIR] [--model DIR]... [--limit N]
        [--modes given,auto,none] [--model-um-per-px U] [--out benchmarks/results/acquisition_eval]

Conditions (magnification m relative to the dataset's images, which are at the models' scale once
resized to the model's input, i.e. µm/px = U x 288 / 224 for 224 px images):
- `native`: each test image as it is (m = 1);
- `mosaic 1x`: 2x2 mosaics of four test images of one class (same scale, four times the area);
- `0.5x`, `0.75x`, `1.5x`, `2x`: those mosaics resized by m (a camera with more pixels at a higher
  magnification, fewer at a lower one): at the models' scale every rendered image holds 2x2 tiles;
- `tint r/b`: the native images with red and blue gains (white balance), 0.8-1.25 (`--tints` for others).
Test images: the shipped models' `report/test_split.txt` (seeded per-image split), grouped by class
into mosaics in file order. Writes `<out>.json` and `<out>.md` (the table).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from device.colour import apply_gains  # noqa: E402
from device.datasets.evaluation import evaluate  # noqa: E402
from device.models.ensemble import Ensemble  # noqa: E402
from device.optics.analyse import AcquisitionSettings, FieldClassifier  # noqa: E402
from device.paths import default_bundle_dirs  # noqa: E402
from device.preprocess import read_image  # noqa: E402

SCALES = (0.5, 0.75, 1.5, 2.0)
TINTS = ((1.25, 0.8), (0.8, 1.25), (1.12, 0.85), (1.25, 1.0), (1.0, 1.25), (1.25, 1.25), (0.8, 0.8))


def test_items(data: Path, split_file: Path) -> list[tuple[str, Path]]:
    out = []
    for line in split_file.read_text().splitlines():
        line = line.strip()
        if line:
            label = line.split("/")[0]
            out.append((label, data / line))
    return out


def write(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))  # PNG: no recompression artefacts


def resize(rgb: np.ndarray, m: float) -> np.ndarray:
    if m == 1.0:
        return rgb
    h, w = rgb.shape[:2]
    interp = cv2.INTER_AREA if m < 1 else cv2.INTER_CUBIC
    return cv2.resize(rgb, (round(w * m), round(h * m)), interpolation=interp)


def render(items: list[tuple[str, Path]], root: Path, limit: int | None, tints=TINTS) -> dict[str, dict]:
    """Render every condition into root/<condition>/<label>/*.png; returns {condition: info}."""
    by_label: dict[str, list[np.ndarray]] = {}
    native = []
    for label, path in items:
        rgb = read_image(path)
        by_label.setdefault(label, []).append(rgb)
        native.append((label, path.stem, rgb))
    conds: dict[str, dict] = {"native": {"m": 1.0, "kind": "native"}}
    if limit and limit * 4 < len(native):  # a seeded sample over all classes, not the first files
        pick = np.random.default_rng(0).choice(len(native), limit * 4, replace=False)
        native = [native[i] for i in sorted(pick)]
    for label, stem, rgb in native:
        write(root / "native" / label / f"{stem}.png", rgb)
    mosaics = []
    for label, imgs in by_label.items():
        for k in range(0, len(imgs) - 3, 4):
            a, b, c, d = imgs[k : k + 4]
            side = min(x.shape[0] for x in (a, b, c, d))
            a, b, c, d = (cv2.resize(x, (side, side)) if x.shape[0] != side else x for x in (a, b, c, d))
            mosaics.append(
                (label, f"{label}-{k // 4:03d}", np.vstack([np.hstack([a, b]), np.hstack([c, d])]))
            )
    if limit:
        rng = np.random.default_rng(0)
        mosaics = [
            mosaics[i] for i in sorted(rng.choice(len(mosaics), min(limit, len(mosaics)), replace=False))
        ]
    for m in (1.0, *SCALES):
        name = "mosaic 1x" if m == 1.0 else f"{m:g}x"
        conds[name] = {"m": m, "kind": "mosaic"}
        for label, stem, mo in mosaics:
            write(root / name / label / f"{stem}.png", resize(mo, m))
    for r, b in tints:
        name = f"tint r{r:g} b{b:g}"
        conds[name] = {"m": 1.0, "kind": "tint", "gains": [r, 1.0, b]}
        for label, stem, rgb in native:
            write(root / name / label / f"{stem}.png", apply_gains(rgb, (r, 1.0, b)))
    return conds


def model_scale(fields: FieldClassifier, override: float | None) -> float:
    if override:
        return override
    if fields.spec.um_per_px:
        return fields.spec.um_per_px
    raise SystemExit("the bundles declare no input.um_per_px: pass --model-um-per-px U")


def save(args, ens, u_model, split, settings, rows, *, final: bool = False) -> None:
    """Write `<out>.json` and `<out>.md` (after every row: a long run keeps what it measured)."""
    out = {
        "models": ens.names,
        "models_um_per_px": u_model,
        "split_file": str(split.relative_to(ROOT) if split.is_relative_to(ROOT) else split),
        "limit": args.limit,
        "settings": settings.__dict__,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(out, indent=2) + "\n")
    lines = [
        f"Models {', '.join(ens.names)} at {u_model:.4g} µm/px; split {out['split_file']}; "
        f"limit {args.limit}.",
        "",
        "| condition | --um-per-px | n | accuracy | uncertain | confidently wrong | tiles/image |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mode = {"given": f"{r['image_um_per_px']:.4g}", "auto": "auto", "none": "(none)"}[r["mode"]]
        tiles = f"{r['tiles_per_image']:.2f}" if r["tiles_per_image"] is not None else "-"
        lines.append(
            f"| {r['condition']} | {mode} | {r['n']} | {100 * r['accuracy']:.1f}% | "
            f"{100 * r['uncertain_rate']:.1f}% | {100 * r['confidently_wrong_rate']:.2f}% | {tiles} |"
        )
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    if final:
        print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    shared = next((p / "shared" for p in ROOT.parents if (p / "shared" / "datasets").is_dir()), ROOT.parent)
    ap.add_argument("--data", type=Path, default=shared / "datasets" / "all-4class")
    ap.add_argument("--model", action="append", help="bundle dir (repeat); default: the shipped ensemble")
    ap.add_argument("--split-file", type=Path, help="default: the first model's report/test_split.txt")
    ap.add_argument("--limit", type=int, default=None, help="at most N mosaics (and 4N native images) each")
    ap.add_argument("--modes", default="given,auto,none", help="comma list of given, auto, none")
    ap.add_argument("--tint-modes", default="given", help="modes for the tint conditions")
    ap.add_argument("--model-um-per-px", type=float, help="the models' µm/px (default: their manifest)")
    ap.add_argument("--no-scale-check", action="store_true", help="[quality] scale_check = false")
    ap.add_argument("--conditions", help="comma list of condition names, in this order (default: all)")
    ap.add_argument(
        "--tints",
        help="red/blue gain pairs, e.g. 1.25/0.8,1/1.25 (default: "
        + ",".join(f"{r:g}/{b:g}" for r, b in TINTS)
        + ")",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "acquisition_eval")
    args = ap.parse_args(argv)
    dirs = args.model or [str(d) for d in default_bundle_dirs()]
    ens = Ensemble.from_dirs(dirs)
    settings = AcquisitionSettings(scale_check=not args.no_scale_check)
    fields = FieldClassifier(ens, settings)
    u_model = model_scale(fields, args.model_um_per_px)
    if fields.spec.um_per_px is None:
        import dataclasses

        fields.spec = dataclasses.replace(fields.spec, um_per_px=u_model)
    split = args.split_file or Path(dirs[0]) / "report" / "test_split.txt"
    items = test_items(args.data, split)
    spec = ens.models[0].manifest.input
    rows = []
    with tempfile.TemporaryDirectory(prefix="acq-eval-") as tmp:
        tints = TINTS
        if args.tints:
            tints = tuple(tuple(float(v) for v in pair.split("/")) for pair in args.tints.split(","))
        conds = render(items, Path(tmp), args.limit, tints)
        order = args.conditions.split(",") if args.conditions else list(conds)
        for name in order:  # in the order asked: a run cut short keeps the most wanted rows
            info = conds[name]
            folder = Path(tmp) / name
            side = read_image(next(folder.rglob("*.png"))).shape[1] / (2 if info["kind"] == "mosaic" else 1)
            # the image's µm/px: a dataset image (side px at m) is u_model x model_width / side
            u_image = u_model * spec.width / side
            modes = args.tint_modes if info["kind"] == "tint" else args.modes
            for mode in modes.split(","):
                scale = {"given": u_image, "auto": "auto", "none": None}[mode]
                t0 = time.perf_counter()
                res = evaluate(fields, folder, scale=scale, progress=False)
                row = {
                    "condition": name,
                    "mode": mode,
                    "m": info["m"],
                    "image_um_per_px": round(u_image, 5),
                    "n": res["n"],
                    "accuracy": res["accuracy"],
                    "uncertain_rate": res["abstain_rate"],
                    "confidently_wrong_rate": res["confidently_wrong_rate"],
                    "accuracy_when_not_uncertain": res["accuracy_when_not_abstained"],
                    "states": res["states"],
                    "scale_check": res["scale_check"],
                    "scale_ratio_median": res["scale_ratio_median"],
                    "tiles_per_image": res["tiles_per_image_mean"],
                    "uncertain_reasons": res["uncertain_reasons"],
                    "seconds": round(time.perf_counter() - t0, 1),
                }
                rows.append(row)
                save(args, ens, u_model, split, settings, rows)
                print(
                    f"{name:18s} {mode:5s} n={row['n']:4d} acc={row['accuracy']:.3f} "
                    f"uncertain={row['uncertain_rate']:.3f} conf_wrong={row['confidently_wrong_rate']:.4f} "
                    f"tiles={row['tiles_per_image']} ({row['seconds']} s)",
                    flush=True,
                )
    save(args, ens, u_model, split, settings, rows, final=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
