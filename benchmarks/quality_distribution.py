"""Distribution of the quality-gate measures over dataset images and degraded variants.

    .venv/bin/python benchmarks/quality_distribution.py [DATASET_DIR] [--limit N]

Variants per image: the original, blurred (Gaussian sigma 3 — a defocused field), over-exposed
(gain 2.5, clipped), under-exposed (gain 0.15), and blank (a uniform pale field with sensor noise —
the slide out of the light path). Prints percentiles of each measure per variant and how many of each
the default thresholds let through, so the thresholds in default_config.toml can be checked.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from device.config import load_config  # noqa: E402
from device.quality import QualityThresholds, assess, measure  # noqa: E402

MEASURES = ("focus", "clipped_high", "clipped_low", "stain", "contrast")
PCTS = (1, 5, 50, 95, 99)


def variants(rgb: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    f = rgb.astype(np.float32)
    blank = np.full_like(rgb, (226, 222, 230)) + rng.normal(0, 2.0, rgb.shape)
    return {
        "original": rgb,
        "blurred": cv2.GaussianBlur(rgb, (0, 0), 3),
        "over_exposed": np.clip(f * 2.5, 0, 255).astype(np.uint8),
        "under_exposed": np.clip(f * 0.15, 0, 255).astype(np.uint8),
        "blank": np.clip(blank, 0, 255).astype(np.uint8),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", nargs="?", default="../shared/datasets/all-4class")
    ap.add_argument("--limit", type=int, default=0, help="at most N images (0: all)")
    args = ap.parse_args()
    files = sorted(p for p in Path(args.dataset).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if args.limit:
        files = files[:: max(1, len(files) // args.limit)][: args.limit]
    if not files:
        print(f"no images under {args.dataset}", file=sys.stderr)
        return 1
    t = QualityThresholds.from_config(load_config(system_config=None).quality)
    rng = np.random.default_rng(0)
    values: dict[str, list[tuple[float, ...]]] = {}
    passed: dict[str, int] = {}
    for p in files:
        bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if bgr is None:
            continue
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        for name, img in variants(rgb, rng).items():
            values.setdefault(name, []).append(measure(img, t.analysis_width))
            passed[name] = passed.get(name, 0) + int(assess(img, t).ok)
    print(f"{len(files)} images from {args.dataset}; thresholds {t}")
    print(f"{'variant':14} {'measure':13} " + " ".join(f"p{q:<7}" for q in PCTS))
    for name, rows in values.items():
        arr = np.array(rows)
        for i, m in enumerate(MEASURES):
            pct = np.percentile(arr[:, i], PCTS)
            print(f"{name:14} {m:13} " + " ".join(f"{v:<8.3f}" for v in pct))
        print(
            f"{name:14} passes the gate: {passed[name]}/{len(rows)} ({100 * passed[name] / len(rows):.1f}%)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
