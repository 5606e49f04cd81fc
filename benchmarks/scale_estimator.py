"""Consistency of the red-cell scale estimator (device/optics/scale.py) across magnifications.

    .venv/bin/python benchmarks/scale_estimator.py [--data DIR] [--split-file F | --sample N] [--jobs 1]

The test split the shipped models were measured on (`--split-file`, default the shipped MobileNetV2's
`report/test_split.txt`: 515 images the models never trained on), or with `--sample N` a seeded,
class-stratified sample of all the dataset's images (default data: ../shared/datasets/all-4class), is rendered
at 0.5x, 0.75x, 1x, 1.5x and 2x its own scale (shrunk; enlargements made from a mirrored 2x2 mosaic,
as a camera with more pixels would see them), as a 2x2 mosaic at 1x, and at 1x with a warm white
balance (red x1.12, blue x0.85). For each rendering the estimate is compared with the 1x estimate of
the same content times the magnification: ratio = estimated / expected. The same content: the image
itself, or for the enlargements its 2x2 mosaic at 1x (a mirrored mosaic doubles the cells cut by the
image's border, so it is not quite the same smear; "1x 2x2 mosaic" shows that effect vs the image).
The bar: within ±10% on at least 95% of images at each scale ("cannot tell" counts as a miss).
The dataset's own true scale is unknown; this measures consistency, which is what rescaling to a
model's µm/px needs.

Writes benchmarks/results/scale_estimator.json (per-condition percentiles and pass rates, and the
distribution of the 1x diameters = the training images' scale).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from device.optics.render import render_at_scale, tint  # noqa: E402
from device.optics.scale import estimate_scale  # noqa: E402
from device.preprocess import read_image  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "all-4class"
FALLBACK_DATA = Path("/work/shared/datasets/all-4class")
DEFAULT_SPLIT = ROOT / "models" / "mobilenetv2-all4-int8" / "report" / "test_split.txt"
#: condition -> magnification
CONDITIONS: dict[str, float] = {
    "0.5x": 0.5,
    "0.75x": 0.75,
    "1.5x (2x2 mosaic)": 1.5,
    "2x (2x2 mosaic)": 2.0,
    "1x 2x2 mosaic": 1.0,
    "1x warm tint": 1.0,
}


def render(rgb: np.ndarray, name: str) -> np.ndarray:
    if name == "1x 2x2 mosaic":
        return render_at_scale(rgb, 1.0, mosaic=2)
    if name == "1x warm tint":
        return tint(rgb, 1.12, 0.85)
    return render_at_scale(rgb, CONDITIONS[name])


def measure(path: str) -> dict:
    rgb = read_image(path)
    out: dict = {"path": path}
    t = time.perf_counter()
    base = estimate_scale(rgb)
    out["seconds_1x"] = time.perf_counter() - t
    out["1x"] = base.to_dict()
    for name in CONDITIONS:
        out[name] = estimate_scale(render(rgb, name)).to_dict()
    return out


def sample(data: Path, n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    classes = sorted(p for p in data.iterdir() if p.is_dir())
    files = {c.name: sorted(str(f) for f in c.glob("*.jpg")) for c in classes}
    total = sum(len(v) for v in files.values())
    picked: list[str] = []
    for _, fs in files.items():
        k = max(1, round(n * len(fs) / total))
        picked += list(rng.choice(fs, size=min(k, len(fs)), replace=False))
    return sorted(picked)


def split_files(data: Path, split_file: Path) -> list[str]:
    """The images listed in `split_file` (paths relative to `data`, one per line)."""
    return [str(data / line.strip()) for line in split_file.read_text().splitlines() if line.strip()]


def reference(name: str) -> str:
    return "1x 2x2 mosaic" if "(2x2 mosaic)" in name else "1x"


def summarise(rows: list[dict]) -> dict:
    def d(row: dict, key: str) -> float | None:
        return row[key]["diameter_px"]

    base = np.array([d(r, "1x") or np.nan for r in rows])
    conf = np.array([r["1x"]["confident"] for r in rows])
    summary: dict = {
        "n_images": len(rows),
        "1x": {
            "cannot_tell": int(np.isnan(base).sum()),
            "not_confident": int((~conf).sum()),
            "diameter_px_percentiles": dict(
                zip(
                    ("p5", "p25", "p50", "p75", "p95"),
                    np.nanpercentile(base, [5, 25, 50, 75, 95]).round(2).tolist(),
                    strict=True,
                )
            ),
            "seconds_per_image_p50": round(float(np.median([r["seconds_1x"] for r in rows])), 3),
        },
    }
    for name, mag in CONDITIONS.items():
        est = np.array([d(r, name) or np.nan for r in rows])
        ref = np.array([d(r, reference(name)) or np.nan for r in rows])
        ratio = est / (ref * mag)
        ok = np.abs(ratio - 1) <= 0.10
        valid = ~np.isnan(ratio)
        both = np.array([r[name]["confident"] and r[reference(name)]["confident"] for r in rows])
        summary[name] = {
            "confident_pairs": int(both.sum()),
            "within_10pct_of_confident_pairs": round(float(ok[both].mean()), 4) if both.any() else None,
            "magnification": mag,
            "compared_with": reference(name),
            "within_10pct": round(float(ok.sum() / len(rows)), 4),
            "within_5pct": round(float((np.abs(ratio - 1) <= 0.05).sum() / len(rows)), 4),
            "cannot_tell": int((~valid).sum()),
            "not_confident": int(sum(not r[name]["confident"] for r in rows)),
            "ratio_percentiles": dict(
                zip(
                    ("p1", "p5", "p50", "p95", "p99"),
                    np.nanpercentile(ratio, [1, 5, 50, 95, 99]).round(4).tolist()
                    if valid.any()
                    else [None] * 5,
                    strict=True,
                )
            ),
            "bar_met": bool(ok.sum() / len(rows) >= 0.95),
        }
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None, help="folder of class folders (default: ../shared)")
    ap.add_argument(
        "--split-file",
        type=Path,
        default=DEFAULT_SPLIT,
        help="images to measure, relative to --data (default: the shipped models' test split)",
    )
    ap.add_argument("--sample", type=int, default=0, help="instead: a seeded sample of N dataset images")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scale_estimator.json")
    ap.add_argument("--worst", type=int, default=0, help="print the N worst images per condition")
    args = ap.parse_args(argv)
    data = args.data or (DEFAULT_DATA if DEFAULT_DATA.is_dir() else FALLBACK_DATA)
    if not data.is_dir():
        print(f"no dataset at {data}; give --data DIR", file=sys.stderr)
        return 2
    if args.sample:
        paths, source = sample(data, args.sample, args.seed), f"seeded sample of {args.sample} images"
    else:
        paths, source = split_files(data, args.split_file), str(args.split_file.relative_to(ROOT))
    t0 = time.perf_counter()
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as ex:
            rows = list(ex.map(measure, paths, chunksize=4))
    else:
        rows = [measure(p) for p in paths]
    summary = summarise(rows)
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    summary["data"] = str(data)
    summary["images_from"] = source
    if args.sample:
        summary["seed"] = args.seed
    summary["images"] = [
        {"path": Path(r["path"]).name, **{k: r[k]["diameter_px"] for k in ["1x", *CONDITIONS]}} for r in rows
    ]
    summary["note"] = (
        "ratio = estimate of the rendering / (1x estimate of the same image x magnification); "
        "'cannot tell' counts as a miss in within_10pct. Per-image split or sample of the dataset "
        "(no patient ids)."
    )
    print(
        f"{'condition':22} {'±10%':>7} {'±5%':>7} {'p5':>7} {'p50':>7} {'p95':>7} {'cannot':>6}  bar"
        "  ±10% (confident)"
    )
    for name in CONDITIONS:
        s = summary[name]
        p = s["ratio_percentiles"]
        print(
            f"{name:22} {s['within_10pct']:7.1%} {s['within_5pct']:7.1%} {p['p5']:7.3f} {p['p50']:7.3f} "
            f"{p['p95']:7.3f} {s['cannot_tell']:6d}  {'met' if s['bar_met'] else 'NOT met'}"
            f"  {s['within_10pct_of_confident_pairs'] or 0:.1%} of {s['confident_pairs']}"
        )
        if args.worst:
            base = {r["path"]: r[reference(name)]["diameter_px"] for r in rows}
            ranked = sorted(
                rows,
                key=lambda r: (
                    -abs(((r[name]["diameter_px"] or 0) / ((base[r["path"]] or 1) * s["magnification"])) - 1)
                ),
            )
            for r in ranked[: args.worst]:
                print(f"    {r['path']}: 1x {base[r['path']]} -> {r[name]['diameter_px']}")
    print(json.dumps(summary["1x"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {args.out} ({summary['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
