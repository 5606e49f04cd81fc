"""How well the white reference undoes a white balance, including one that clips the background.

    .venv/bin/python benchmarks/white_reference_eval.py [--split runs/split-all4-seed42.json] [--every 3]

1. On the split's training images: the stained pixels' log(red/green) and log(blue/green) after the
   white reference, as quantiles. Their upper quartile is `device.colour._CENSORED_LOG_RATIO`,
   the prior a clipped background channel (red) is extrapolated from.
2. On its test images under red/blue gains (0.8-1.25): the white reference's red and blue estimate over
   the true one (the untinted image's reference times the gain), and the mean absolute difference per
   channel between the normalised tinted image and the normalised original, with the extrapolation and
   with the background taken as it reads (clipped).

Writes benchmarks/results/white_reference_eval.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from device import colour  # noqa: E402
from device.preprocess import read_image  # noqa: E402

TINTS = ((1.25, 0.8), (1.2, 0.85), (1.12, 0.85), (0.8, 1.25), (0.85, 1.2), (1.0, 1.0))
Q = (5, 25, 50, 75, 95)


def stained_log_ratios(rgb: np.ndarray) -> tuple[float, float] | None:
    bg = colour.reference_white(rgb)
    pix = None if bg is None else colour.stained_pixels(colour._small(rgb).reshape(-1, 3), bg)
    if pix is None:
        return None
    return float(np.median(np.log(pix[:, 0] / pix[:, 1]))), float(np.median(np.log(pix[:, 2] / pix[:, 1])))


def plain_normalise(rgb: np.ndarray) -> np.ndarray:
    bg = colour.estimate_background(rgb)
    return colour.apply_gains(rgb, np.clip(colour.WHITE_LEVEL / bg, *colour._GAIN_RANGE))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", type=Path, default=ROOT / "runs" / "split-all4-seed42.json")
    ap.add_argument("--every", type=int, default=3, help="every k-th image of each split")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "white_reference_eval.md")
    args = ap.parse_args(argv)
    split = json.loads(args.split.read_text())
    lines = [f"# White reference under white-balance gains ({args.split.name}, every {args.every}.)", ""]
    ratios = [r for it in split["train"][:: args.every] if (r := stained_log_ratios(read_image(it["path"])))]
    arr = np.array(ratios)
    lines += [
        f"Training images ({len(arr)}): stained pixels' log ratios after the white reference, quantiles {Q}:",
        f"- log(R/G): {np.percentile(arr[:, 0], Q).round(3).tolist()}",
        f"- log(B/G): {np.percentile(arr[:, 1], Q).round(3).tolist()}",
        f"- prior in use (`_CENSORED_LOG_RATIO`): {colour._CENSORED_LOG_RATIO}",
        "",
        "| gains R, B | red ref est/true (p5/p50/p95) | blue ref est/true | |diff| R, G, B (extrapolated) "
        "| |diff| R, G, B (as read) |",
        "|---|---|---|---|---|",
    ]
    tests = [read_image(it["path"]) for it in split["test"][:: args.every]]
    for r, b in TINTS:
        est, new, old = [], [], []
        for rgb in tests:
            tinted = colour.apply_gains(rgb, (r, 1.0, b))
            ref0, ref = colour.reference_white(rgb), colour.reference_white(tinted)
            if ref0 is None or ref is None:
                continue
            est.append(ref / (ref0 * np.array([r, 1.0, b])))
            want = colour.normalise_background(rgb).astype(np.float32)
            new.append(np.abs(want - colour.normalise_background(tinted)).mean(axis=(0, 1)))
            old.append(np.abs(want - plain_normalise(tinted)).mean(axis=(0, 1)))
        e = np.array(est)
        lines.append(
            f"| {r:g}, {b:g} | {np.percentile(e[:, 0], (5, 50, 95)).round(3).tolist()} | "
            f"{np.percentile(e[:, 2], (5, 50, 95)).round(3).tolist()} | "
            f"{[round(float(x), 1) for x in np.mean(new, 0)]} | "
            f"{[round(float(x), 1) for x in np.mean(old, 0)]} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
