"""Augmentation ablation on the VALIDATION split: what each robust component buys and what it costs.

    .venv/bin/python benchmarks/ablation.py --split runs/split-all4-seed42.json \\
        --backbone mobilenetv2 --weights ../shared/pretrained/<mobilenet .h5> \\
        --size 160 --epochs 6 --out runs/ablation-mobilenetv2-160 [--report-into runs/RUN]

One model per variant, all from the same ImageNet backbone, the same seed and the same number of steps:
`basic` (the recipe before issue 11), `robust` (all components of convert/augment.py), `none` (no
augmentation at all) and `robust` minus each component in turn. To fit several variants on a 2-core CPU
this is a PROXY of the shipped recipe: the backbone stays frozen (or only its top `--finetune-layers`
train) and the images are smaller than the shipped 288 px; the head learns on augmented batches each
step (no feature cache), so augmentation does act on what is learned.

Each variant is scored on the validation split (never the test split: this chooses a recipe), unshifted
and under every MILD acquisition shift of benchmarks/robustness.py applied to the raw image before the
device's own `prepare` (white reference, crop, resize): accuracy, NLL and the rate of confident errors
(wrong with top probability >= 0.9). "Buys" = accuracy under the shifts a component models, compared with
the full recipe minus that component; "costs" = unshifted accuracy / NLL and training time.

Writes ablation.json, ABLATION.md into --out (and appends the table to --report-into's REPORT.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from robustness import SHIFTS  # noqa: E402

from convert.calibrate import nll  # noqa: E402
from device.fsutil import atomic_write_bytes  # noqa: E402
from device.preprocess import prepare, read_image  # noqa: E402

#: robust component -> the mild shifts it is meant to make harmless
TARGETS: dict[str, tuple[str, ...]] = {
    "geometry": ("scale", "rotation"),
    "stain": ("stain",),
    "white": ("white_balance", "gamma"),
    "illumination": ("vignetting",),
    "defocus": ("blur",),
    "noise": ("noise",),
    "jpeg": ("jpeg",),
}
CONFIDENT = 0.9


def variants(components: tuple[str, ...]) -> list[tuple[str, str, tuple[str, ...]]]:
    """(name, recipe, skipped components): none, basic, robust, robust minus each component."""
    out = [("none", "none", ()), ("basic", "basic", ()), ("robust", "robust", ())]
    out += [(f"robust - {c}", "robust", (c,)) for c in components]
    return out


def shifted_sets(
    paths: list[str], size: int, white_reference: str | None, seed: int
) -> dict[str, np.ndarray]:
    """condition -> (N, size, size, 3) uint8: 'none' and every mild shift, through the device's prepare."""
    raws = [read_image(p) for p in paths]
    sets = {"none": [prepare(r, (size, size), white_reference=white_reference) for r in raws]}
    for name, sev in SHIFTS.items():
        _, fn = sev["mild"]
        sets[name] = [
            prepare(fn(r, seed + i), (size, size), white_reference=white_reference)
            for i, r in enumerate(raws)
        ]
    return {k: np.stack(v) for k, v in sets.items()}


def score(proba: np.ndarray, y: np.ndarray) -> dict:
    pred = proba.argmax(1)
    top = proba.max(1)
    wrong = pred != y
    return {
        "accuracy": float((~wrong).mean()),
        "nll": nll(proba, y),
        "confident_wrong": float((wrong & (top >= CONFIDENT)).mean()),
    }


def train_variant(args, split, recipe: str, skip: tuple[str, ...], val_sets: dict, y_val: np.ndarray) -> dict:
    import keras

    from convert.augment import make_augmenter
    from training.data import class_weights
    from training.models import build_model, set_finetune
    from training.pipeline import make_dataset

    keras.utils.set_random_seed(args.seed)
    k = len(split.labels)
    model = build_model(args.backbone, k, size=args.size, weights=args.weights, dropout=0.2)
    if args.finetune_layers > 0:
        set_finetune(model, args.finetune_layers)
    aug = None if recipe == "none" else make_augmenter(args.seed, recipe=recipe, skip=skip)
    wr = None if args.white_reference == "none" else args.white_reference
    ds = make_dataset(
        split.paths("train"),
        split.label_ids("train"),
        size=args.size,
        num_classes=k,
        batch=args.batch,
        shuffle=True,
        augment=aug,
        seed=args.seed,
        white_reference=wr,
    )
    steps = int(np.ceil(len(split.paths("train")) / args.batch)) * args.epochs
    lr = keras.optimizers.schedules.CosineDecay(args.lr, steps)
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="categorical_crossentropy")
    t = time.perf_counter()
    model.fit(ds, epochs=args.epochs, class_weight=class_weights(split), verbose=0)
    seconds = time.perf_counter() - t
    out = {"train_seconds": round(seconds, 1)}
    out["scores"] = {
        cond: score(np.asarray(model.predict(x.astype("float32"), batch_size=64, verbose=0)), y_val)
        for cond, x in val_sets.items()
    }
    return out


def table(doc: dict) -> str:
    shifts = list(SHIFTS)
    res = doc["variants"]
    full = res["robust"]["scores"]
    lines = [
        "## Augmentation ablation (validation split)",
        "",
        f"Proxy of the shipped recipe: {doc['backbone']} at {doc['size']} px, backbone frozen"
        + (f" except its top {doc['finetune_layers']} layers" if doc["finetune_layers"] else "")
        + f", {doc['epochs']} epochs per variant, seed {doc['seed']}, white reference "
        f"{doc['white_reference']}; {doc['n_val']} validation images, each shift at its MILD severity "
        "(benchmarks/robustness.py). Accuracy in %; NLL unshifted; conf-wrong = wrong with p >= 0.9. "
        "'Buys' = accuracy under the shifts the component targets, full recipe minus the recipe without it.",
        "",
        "| variant | unshifted acc | NLL | mean acc, 9 mild shifts | worst shift | conf-wrong (all shifts) "
        "| buys (targeted shifts) | train s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in res.items():
        s = r["scores"]
        mean = np.mean([s[k]["accuracy"] for k in shifts])
        worst = min(shifts, key=lambda k: s[k]["accuracy"])
        cw = np.mean([s[k]["confident_wrong"] for k in ["none", *shifts]])
        buys = "-"
        if name.startswith("robust - "):
            comp = name.removeprefix("robust - ")
            tg = TARGETS[comp]
            delta = np.mean([full[k]["accuracy"] - s[k]["accuracy"] for k in tg])
            buys = f"{100 * delta:+.1f} pts ({', '.join(tg)})"
        lines.append(
            f"| {name} | {100 * s['none']['accuracy']:.1f} | {s['none']['nll']:.3f} | {100 * mean:.1f} | "
            f"{worst} {100 * s[worst]['accuracy']:.1f} | {100 * cw:.2f}% | {buys} | "
            f"{r['train_seconds']:.0f} |"
        )
    lines += ["", "Per shift (accuracy %):", ""]
    lines.append("| variant | " + " | ".join(["none", *shifts]) + " |")
    lines.append("|---|" + "---|" * (len(shifts) + 1))
    for name, r in res.items():
        s = r["scores"]
        lines.append(
            f"| {name} | " + " | ".join(f"{100 * s[k]['accuracy']:.1f}" for k in ["none", *shifts]) + " |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", type=Path, required=True)
    ap.add_argument("--backbone", default="mobilenetv2")
    ap.add_argument("--weights", default=None, help="as `smearscope train --weights`")
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--finetune-layers", type=int, default=0)
    ap.add_argument("--white-reference", choices=("background", "none"), default="background")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--only", default="", help="comma-separated variant names (default: all)")
    ap.add_argument("--limit-train", type=int, default=0, help="use only N training images (tests)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--report-into", type=Path, help="run directory whose REPORT.md gets the table")
    args = ap.parse_args(argv)

    from convert.augment import COMPONENTS
    from training.data import load_split

    split = load_split(args.split)
    if args.limit_train:
        rng = np.random.default_rng(args.seed)
        keep = sorted(rng.permutation(len(split.parts["train"]))[: args.limit_train].tolist())
        split.parts["train"] = [split.parts["train"][i] for i in keep]
    wr = None if args.white_reference == "none" else args.white_reference
    val_paths = split.paths("val")
    y_val = split.label_ids("val")
    t0 = time.perf_counter()
    val_sets = shifted_sets(val_paths, args.size, wr, args.seed)
    chosen = [v for v in variants(COMPONENTS) if not args.only or v[0] in args.only.split(",")]
    doc = {
        "backbone": args.backbone,
        "size": args.size,
        "epochs": args.epochs,
        "finetune_layers": args.finetune_layers,
        "white_reference": args.white_reference,
        "seed": args.seed,
        "n_train": len(split.paths("train")),
        "n_val": len(val_paths),
        "variants": {},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    for i, (name, recipe, skip) in enumerate(chosen, 1):
        r = train_variant(args, split, recipe, skip, val_sets, y_val)
        doc["variants"][name] = r
        s = r["scores"]["none"]
        print(
            f"[{i}/{len(chosen)}] {name:22s} val acc {s['accuracy']:.3f} NLL {s['nll']:.3f} "
            f"({r['train_seconds']:.0f} s)",
            file=sys.stderr,
            flush=True,
        )
        atomic_write_bytes(args.out / "ablation.json", json.dumps(doc, indent=2).encode())
    doc["seconds"] = round(time.perf_counter() - t0, 1)
    atomic_write_bytes(args.out / "ablation.json", json.dumps(doc, indent=2).encode())
    if "robust" in doc["variants"]:
        md = table(doc)
        atomic_write_bytes(args.out / "ABLATION.md", md.encode())
        if args.report_into:
            report = args.report_into / "REPORT.md"
            text = report.read_text() if report.exists() else ""
            head = "## Augmentation ablation (validation split)"
            text = text.split(head)[0].rstrip() + "\n\n" + md
            atomic_write_bytes(report, text.encode())
        print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
