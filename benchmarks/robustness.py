"""Robustness report: the test split under acquisition shifts, per model and for the ensemble.

    .venv/bin/python benchmarks/robustness.py --model models/A --model models/B \\
        --split runs/split-all4-seed42.json --out runs/robustness [--limit 120] [--card]

Each shift is applied to the RAW image (what another station's camera would deliver), then the device's
own `prepare` (white reference, crop, resize) and decision run. Two severities: `mild` = what a real
second station would show (issue 11's targets apply to it), `strong` = past that.

Per condition, for every model alone and the soft-vote ensemble: accuracy (arg-max, abstained or not),
"uncertain" rate, confidently-wrong rate (not abstained and wrong) and confident false-benign rate (a
malignant image called benign without abstaining — the worst error). Then the out-of-distribution probes
(convert/ood.py) with every check and with the colour check turned off. Writes robustness.json,
robustness.md and robustness.png into --out; `--card` also copies them into each bundle's report/ and
re-renders its MODEL.md.

Scale: the device does not (yet) rescale frames to the model's µm/px here, so a scale shift is rendered as
a centre crop enlarged back by the device's own resize: the cells reach the model `s` times too large.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from convert import ood  # noqa: E402
from device.fsutil import atomic_write_bytes  # noqa: E402
from device.models.ensemble import Ensemble, apply_temperature, energy  # noqa: E402
from device.preprocess import read_image  # noqa: E402

_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_HED_INV = np.linalg.inv(_HED)


def _scale(rgb: np.ndarray, s: float) -> np.ndarray:
    h, w = rgb.shape[:2]
    ch, cw = round(h / s), round(w / s)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    return cv2.resize(rgb[y0 : y0 + ch, x0 : x0 + cw], (w, h), interpolation=cv2.INTER_LINEAR)


def _gains(rgb: np.ndarray, g: tuple[float, float, float]) -> np.ndarray:
    return np.clip(rgb.astype(np.float32) * np.array(g, np.float32), 0, 255).astype(np.uint8)


def _camera(rgb: np.ndarray, gain: float, offset: float, seed: int) -> np.ndarray:
    """Another camera: per-channel gains within 1 ± `gain` and black-level offsets within ± `offset`
    (seeded per image), over the whole image, background included."""
    rng = np.random.default_rng(seed)
    g = rng.uniform(1 - gain, 1 + gain, 3).astype(np.float32)
    o = rng.uniform(-offset, offset, 3).astype(np.float32)
    return np.clip(rgb.astype(np.float32) * g + o, 0, 255).astype(np.uint8)


def _gamma(rgb: np.ndarray, gamma: float) -> np.ndarray:
    lut = np.clip(255.0 * (np.arange(256) / 255.0) ** gamma, 0, 255).astype(np.uint8)
    return cv2.LUT(rgb, lut)


def _blur(rgb: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(rgb, (0, 0), sigmaX=sigma)


def _noise(rgb: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rgb.astype(np.float32) + rng.normal(0, sigma, rgb.shape), 0, 255).astype(np.uint8)


def _jpeg(rgb: np.ndarray, q: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, q])
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _vignette(rgb: np.ndarray, v: float) -> np.ndarray:
    h, w = rgb.shape[:2]
    yy, xx = np.mgrid[-1 : 1 : h * 1j, -1 : 1 : w * 1j]
    field = 1.0 - v * (xx**2 + yy**2) / 2.0
    return np.clip(rgb.astype(np.float32) * field[..., None], 0, 255).astype(np.uint8)


def _rotate(rgb: np.ndarray, deg: float) -> np.ndarray:
    h, w = rgb.shape[:2]
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), deg, 1.0)
    return cv2.warpAffine(rgb, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def _stain(rgb: np.ndarray, h_gain: float, e_gain: float) -> np.ndarray:
    od = -np.log(np.maximum(rgb.astype(np.float64), 1.0) / 255.0).reshape(-1, 3)
    hed = od @ _HED_INV
    hed[:, 0] *= h_gain
    hed[:, 1] *= e_gain
    out = 255.0 * np.exp(-(hed @ _HED))
    return np.clip(out, 0, 255).reshape(rgb.shape).astype(np.uint8)


#: name -> {severity: (description, fn(rgb, seed) -> rgb)}
SHIFTS: dict[str, dict[str, tuple[str, Callable[[np.ndarray, int], np.ndarray]]]] = {
    "scale": {
        "mild": ("cells x1.15 larger", lambda x, s: _scale(x, 1.15)),
        "strong": ("cells x1.4 larger", lambda x, s: _scale(x, 1.4)),
    },
    "white_balance": {
        "mild": ("gains R 1.2, G 1.0, B 0.85 (warm)", lambda x, s: _gains(x, (1.2, 1.0, 0.85))),
        "strong": ("gains R 1.4, G 1.0, B 0.7", lambda x, s: _gains(x, (1.4, 1.0, 0.7))),
    },
    "camera": {
        "mild": ("per-channel gain 0.9-1.1, offset ±10", lambda x, s: _camera(x, 0.1, 10.0, s)),
        # until 2026-11-30 an out-of-distribution probe ("stain_shift"); see convert/ood.py
        "strong": ("per-channel gain 0.6-1.4, offset ±40", lambda x, s: _camera(x, 0.4, 40.0, s)),
    },
    "gamma": {
        "mild": ("gamma 1.3", lambda x, s: _gamma(x, 1.3)),
        "strong": ("gamma 1.7", lambda x, s: _gamma(x, 1.7)),
    },
    "blur": {
        "mild": ("Gaussian sigma 1.0 px", lambda x, s: _blur(x, 1.0)),
        "strong": ("Gaussian sigma 2.5 px", lambda x, s: _blur(x, 2.5)),
    },
    "noise": {
        "mild": ("Gaussian sigma 6", lambda x, s: _noise(x, 6.0, s)),
        "strong": ("Gaussian sigma 15", lambda x, s: _noise(x, 15.0, s)),
    },
    "jpeg": {
        "mild": ("JPEG quality 50", lambda x, s: _jpeg(x, 50)),
        "strong": ("JPEG quality 15", lambda x, s: _jpeg(x, 15)),
    },
    "vignetting": {
        "mild": ("corners 25% darker", lambda x, s: _vignette(x, 0.25)),
        "strong": ("corners 50% darker", lambda x, s: _vignette(x, 0.5)),
    },
    "rotation": {
        "mild": ("rotated 30 degrees", lambda x, s: _rotate(x, 30.0)),
        "strong": ("rotated 135 degrees", lambda x, s: _rotate(x, 135.0)),
    },
    "stain": {
        "mild": ("haematoxylin x1.15, eosin x0.9", lambda x, s: _stain(x, 1.15, 0.9)),
        "strong": ("haematoxylin x1.4, eosin x0.7", lambda x, s: _stain(x, 1.4, 0.7)),
    },
}


def decide(ens: Ensemble, rgb: np.ndarray) -> dict[str, tuple[int, bool]]:
    """(arg-max class, abstained) for every member ALONE and for the ensemble ("ensemble") from ONE
    inference per member. Mirrors `Ensemble.classify` (tests check the ensemble part equals it)."""
    prepared = ens._prepared(rgb)
    out: dict[str, tuple[int, bool]] = {}
    stack, any_fired = [], False
    for m in ens.models:
        name, spec = m.manifest.name, m.manifest.input
        key = (spec.width, spec.height, spec.resize, spec.white_reference)
        fired = False
        check = ens.colour_checks.get(name)
        if check is not None and check.distance(prepared[key]) > check.threshold:
            fired = True
        floor = ens.ood_floors.get(name)
        raw = m.predict(prepared[key], with_cam=floor is not None)
        if floor is not None and raw.cam is not None and energy(raw.cam) < floor:
            fired = True
        limit = ens.content_thresholds.get(name)
        if limit is not None and raw.ood_distance is not None and raw.ood_distance > limit:
            fired = True
        p = apply_temperature(raw.probabilities, m.manifest.temperature)
        stack.append(p)
        any_fired |= fired
        out[name] = (int(np.argmax(p)), fired or float(p.max()) < m.manifest.abstain_threshold)
    probs = np.mean(stack, axis=0)
    idx = int(np.argmax(probs))
    abstain = any_fired or float(probs[idx]) < ens.threshold
    if not abstain and ens.abstain_on_disagreement and len(stack) > 1:
        abstain = len({int(np.argmax(p)) for p in stack}) > 1
    out["ensemble"] = (idx, abstain)
    return out


def _rates(rows: list[tuple[int, bool]], y: np.ndarray, malignant: np.ndarray, benign_ids: set[int]) -> dict:
    pred = np.array([r[0] for r in rows])
    abst = np.array([r[1] for r in rows])
    wrong = pred != y
    kept = ~abst
    false_benign = malignant & kept & np.isin(pred, list(benign_ids))
    return {
        "n": len(rows),
        "accuracy": float((~wrong).mean()),
        "uncertain": float(abst.mean()),
        "confidently_wrong": float((wrong & kept).mean()),
        "confident_false_benign": float(false_benign.mean()),
        "accuracy_when_not_uncertain": float((~wrong)[kept].mean()) if kept.any() else None,
    }


def load_test(
    split: Path, part: str, limit: int | None, seed: int
) -> tuple[list[Path], list[str], list[str]]:
    doc = json.loads(split.read_text())
    rows = doc[part]
    if limit and limit < len(rows):
        rng = np.random.default_rng(seed)
        # stratified: the same fraction of every label
        chosen: list[int] = []
        for lb in doc["labels"]:
            idx = [i for i, r in enumerate(rows) if r["label"] == lb]
            k = max(1, round(limit * len(idx) / len(rows)))
            chosen += sorted(rng.permutation(idx)[:k].tolist())
        rows = [rows[i] for i in sorted(chosen)]
    return [Path(r["path"]) for r in rows], [r["label"] for r in rows], list(doc["labels"])


def run(
    models: list[Path],
    split: Path,
    *,
    part: str = "test",
    limit: int | None = None,
    seed: int = 0,
    ood_per_kind: int = 48,
    shifts: list[str] | None = None,
) -> dict:
    ens = Ensemble.from_dirs([str(m) for m in models])
    paths, labels, label_ids = load_test(split, part, limit, seed)
    y = np.array([label_ids.index(lb) for lb in labels])
    mal = {lb.id: bool(lb.malignant) for lb in ens.labels}
    malignant = np.array([mal.get(lb, True) for lb in labels])
    benign_ids = {i for i, lb in enumerate(ens.label_ids) if mal.get(lb) is False}
    images = [read_image(p) for p in paths]
    conditions: list[tuple[str, str, str, Callable | None]] = [("none", "-", "unshifted", None)]
    for name, sev in SHIFTS.items():
        if shifts and name not in shifts:
            continue
        for severity, (desc, fn) in sev.items():
            conditions.append((name, severity, desc, fn))
    results = []
    t0 = time.perf_counter()
    for name, severity, desc, fn in conditions:
        per: dict[str, list[tuple[int, bool]]] = {}
        for i, img in enumerate(images):
            shifted = img if fn is None else fn(img, seed + i)
            for who, r in decide(ens, shifted).items():
                per.setdefault(who, []).append(r)
        entry = {"shift": name, "severity": severity, "description": desc}
        entry["results"] = {who: _rates(rows, y, malignant, benign_ids) for who, rows in per.items()}
        results.append(entry)
        e = entry["results"]["ensemble"]
        print(
            f"{name:14s} {severity:6s} ensemble acc {e['accuracy']:.3f} uncertain {e['uncertain']:.3f} "
            f"conf-wrong {e['confidently_wrong']:.4f} false-benign {e['confident_false_benign']:.4f}",
            file=sys.stderr,
        )
    step = max(1, len(images) // ood_per_kind)
    probes = ood.measure_checks(ens.models, images[::step][:ood_per_kind], n=ood_per_kind, seed=0)
    return {
        "models": [m.manifest.name for m in ens.models],
        "split": str(split),
        "part": part,
        "n_images": len(images),
        "limit": limit,
        "seed": seed,
        "conditions": results,
        "ood_probes": {
            k: probes[k] for k in ("all", "no_colour", "colour_only", "energy_only", "content_only", "none")
        },
        "seconds": round(time.perf_counter() - t0, 1),
        "note": "A screening aid for trained staff, not a diagnosis. Shifts are simulated on this lab's "
        "images; no second hospital's labelled B-ALL images exist here.",
    }


def probes_report(
    models: list[Path], split: Path, part: str, limit: int | None, seed: int, ood_per_kind: int
) -> dict:
    ens = Ensemble.from_dirs([str(m) for m in models])
    paths, _, _ = load_test(split, part, limit, seed)
    step = max(1, len(paths) // ood_per_kind)
    images = [read_image(p) for p in paths[::step][:ood_per_kind]]
    probes = ood.measure_checks(ens.models, images, n=ood_per_kind, seed=0)
    return {k: probes[k] for k in ("all", "no_colour", "colour_only", "energy_only", "content_only", "none")}


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def markdown(report: dict) -> str:
    who = [*report["models"], "ensemble"]
    lines = [
        "# Robustness report",
        "",
        f"Models: {', '.join(report['models'])}; {report['part']} split of `{report['split']}`, "
        f"{report['n_images']} images"
        + (f" (stratified sample, seed {report['seed']})" if report["limit"] else "")
        + ". Each shift is applied to the raw image, then the device's own preprocessing and decision.",
        "",
        "| shift | severity | what | "
        + " | ".join(f"{w}: acc / uncertain / conf. wrong / conf. false benign" for w in who)
        + " |",
        "| --- | --- | --- | " + " | ".join("---" for _ in who) + " |",
    ]
    for c in report["conditions"]:
        cells = []
        for w in who:
            r = c["results"][w]
            cells.append(
                f"{_pct(r['accuracy'])} / {_pct(r['uncertain'])} / {_pct(r['confidently_wrong'])} / "
                f"{_pct(r['confident_false_benign'])}"
            )
        lines.append(f"| {c['shift']} | {c['severity']} | {c['description']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Out-of-distribution probes (ensemble)",
        "",
        "Confident malignant / uncertain per probe kind, with every check and with the colour check OFF "
        "(the content check and the energy floor alone), and what each check catches alone.",
        "",
        "| probe | n | all checks | colour check off | colour only | energy only | content only | none |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    sets = ("all", "no_colour", "colour_only", "energy_only", "content_only", "none")
    for kind, r in report["ood_probes"]["all"].items():
        cells = [
            f"{_pct(report['ood_probes'][s][kind]['confident_malignant'])} mal. / "
            f"{_pct(report['ood_probes'][s][kind]['abstained'])} unc."
            for s in sets
        ]
        lines.append(f"| {kind} | {r['n']} | " + " | ".join(cells) + " |")
    lines += ["", "![robustness](robustness.png)", "", report["note"], ""]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    who = [*report["models"], "ensemble"]
    conds = [f"{c['shift']}\n{c['severity']}" for c in report["conditions"]]
    fig, axes = plt.subplots(3, 1, figsize=(max(8, 0.6 * len(conds)), 9), sharex=True)
    x = np.arange(len(conds))
    width = 0.8 / len(who)
    for ax, key, title in zip(
        axes,
        ("accuracy", "uncertain", "confidently_wrong"),
        ("accuracy (arg-max)", '"uncertain" rate', "confidently wrong"),
        strict=True,
    ):
        for j, w in enumerate(who):
            vals = [c["results"][w][key] for c in report["conditions"]]
            ax.bar(x + (j - (len(who) - 1) / 2) * width, vals, width, label=w)
        ax.set_ylabel(title)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylim(0.5, 1.0)
    axes[0].legend(fontsize=7, loc="lower left")
    axes[-1].set_xticks(x, conds, fontsize=7)
    fig.suptitle("Test split under acquisition shifts (screening aid, not a diagnosis)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(report: dict, out: Path, bundles: list[Path] | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "robustness.json", (json.dumps(report, indent=1) + "\n").encode())
    atomic_write_bytes(out / "robustness.md", markdown(report).encode())
    plot(report, out / "robustness.png")
    for b in bundles or []:
        from convert import card

        rep = b / "report"
        rep.mkdir(exist_ok=True)
        for name in ("robustness.json", "robustness.md", "robustness.png"):
            shutil.copyfile(out / name, rep / name)
        card.write_card(b)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/robustness.py", description=__doc__)
    p.add_argument("--model", action="append", required=True, type=Path, help="bundle dir (repeat)")
    p.add_argument("--split", required=True, type=Path, help="a split.json (runs/split-all4-seed42.json)")
    p.add_argument("--part", default="test")
    p.add_argument("--limit", type=int, help="stratified sample of this many images (CPU budget)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ood-per-kind", type=int, default=48)
    p.add_argument("--shift", action="append", choices=sorted(SHIFTS), help="only these shifts (repeat)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument(
        "--card", action="store_true", help="copy into each bundle's report/ and re-render MODEL.md"
    )
    p.add_argument(
        "--probes-only",
        action="store_true",
        help="re-measure only the out-of-distribution probes of an existing --out/robustness.json",
    )
    args = p.parse_args(argv)
    if args.probes_only:
        report = json.loads((args.out / "robustness.json").read_text())
        report["ood_probes"] = probes_report(
            args.model, args.split, args.part, args.limit, args.seed, args.ood_per_kind
        )
        write(report, args.out, args.model if args.card else None)
        print(f"{args.out}/robustness.md: probes re-measured")
        return 0
    report = run(
        args.model,
        args.split,
        part=args.part,
        limit=args.limit,
        seed=args.seed,
        ood_per_kind=args.ood_per_kind,
        shifts=args.shift,
    )
    write(report, args.out, args.model if args.card else None)
    e = report["conditions"][0]["results"]["ensemble"]
    print(
        f"{args.out}/robustness.md: unshifted ensemble accuracy {e['accuracy']:.4f}, "
        f"uncertain {e['uncertain']:.4f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
