"""Where the normal types' macro-F1 stands and what would move it, on the cell bundles' own test split.

    python benchmarks/normal_types.py --crops data/cells-96 [--bundle models/cells-mobilenetv2-96-int8 ...]

The test crops are those the first bundle lists in `report/test_split.txt` (the crops of the other lab's
pictures, originals only; `--crops` is the crop dataset of `training.cells.build_crops`, where they are
found by name). Two questions:

1. **Views.** A white cell has no up or down: does averaging the shipped ensemble's probabilities over the
   cell's flips and quarter turns name the types better? Each set of views is decided by the bundles' own
   `cells` thresholds (chosen without views) and scored as `training.cells.evaluate` scores the test
   split: macro-F1 over the eight types with the decision's names (an unnamed or unclassified cell is a
   miss), and the argmax's; a cell the content check finds unfamiliar in most views stays unclassified.
2. **Detail.** How much does the B-ALL pitch (the crops' 0.479 µm/px detail, so sharpness cannot tell the
   labs apart) cost? A linear probe (logistic regression) on frozen ImageNet MobileNetV2 features of the
   other lab's training crops, tested on its test crops: the station's crop against the same box at the
   picture's full detail. The probe is not the product; the difference between its two rows is the
   measure.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from device.fsutil import atomic_write_bytes  # noqa: E402
from device.models.ensemble import Ensemble  # noqa: E402
from device.models.model import TFLiteModel  # noqa: E402
from training.cells.calibrate_cells import decisions  # noqa: E402
from training.cells.cellprobs import CellTable, SplitCrop, load_part, run_cells, variant_fn  # noqa: E402
from training.cells.evaluate import cell_figures  # noqa: E402
from training.data import read_test_list  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
VIEWS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "as cut": lambda x: x,
    "turned 180°": lambda x: x[::-1, ::-1],
    "mirrored left-right": lambda x: x[:, ::-1],
    "mirrored up-down": lambda x: x[::-1],
    "turned 90°": lambda x: np.rot90(x, 1),
    "turned 270°": lambda x: np.rot90(x, 3),
    "transposed": lambda x: np.transpose(x, (1, 0, 2)),
    "anti-transposed": lambda x: np.rot90(x, 2).transpose(1, 0, 2),
}
SETS = {"1 view": 1, "2 views": 2, "4 views": 4, "8 views": 8}


def test_crops(crops: Path, bundle: Path, lab: str = "pbc") -> tuple[list[SplitCrop], list[SplitCrop], dict]:
    """(the test crops of `lab`, the other crops of `lab`, the crop manifest)."""
    listed = read_test_list(bundle)
    manifest = json.loads((crops / "crops.json").read_text())
    rows: dict[str, list[dict]] = {"test": [], "train": []}
    for r in manifest["crops"]:
        if r["lab"] == lab and r["copy_of"] is None:
            rows["test" if r["path"] in listed else "train"].append(
                {"path": str(crops / r["path"]), "label": r["label"]}
            )
    test, _ = load_part(crops, rows, "test")
    train, _ = load_part(crops, rows, "train")
    return test, train, manifest


def views(ens: Ensemble, crops: list[SplitCrop]) -> dict:
    first = ens.models[0].manifest
    labels, spec = list(first.labels), first.cells
    truth = [c.label for c in crops]
    tables = {}
    for name, fn in VIEWS.items():
        tables[name] = run_cells(ens, [np.ascontiguousarray(fn(c.rgb)) for c in crops])
    out = {}
    names = list(VIEWS)
    for set_name, k in SETS.items():
        chosen = names[:k]
        probs = np.mean([tables[v].probs for v in chosen], axis=0)
        unfamiliar = []
        for i in range(len(crops)):
            reasons = [tables[v].unfamiliar[i] for v in chosen if tables[v].unfamiliar[i] is not None]
            unfamiliar.append(reasons[0] if 2 * len(reasons) > k else None)
        table = CellTable(tables[names[0]].labels, probs, {}, unfamiliar)
        f = cell_figures(truth, decisions(table, labels, spec), probs, labels)
        out[set_name] = {
            "views": chosen,
            "macro_f1_decision": f["macro_f1_normal_decision"],
            "macro_f1_argmax": f["macro_f1_normal_argmax"],
            "unclassified": f["states"]["unclassified"],
            "confidently_wrong": f["confidently_wrong"],
            "named_right": {t: v["named_correct"] for t, v in f["per_type"].items()},
        }
        print(
            set_name,
            json.dumps({k2: v for k2, v in out[set_name].items() if k2 != "named_right"}),
            flush=True,
        )
    return out


def probe(train: list[SplitCrop], test: list[SplitCrop], manifest: dict, weights: str) -> dict:
    import keras
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    size = int(manifest["crop"]["size"])
    net = keras.applications.MobileNetV2(
        input_shape=(size, size, 3), include_top=False, pooling="avg", weights=weights
    )

    def features(images: list[np.ndarray]) -> np.ndarray:
        x = keras.applications.mobilenet_v2.preprocess_input(np.stack(images).astype("float32"))
        return net.predict(x, batch_size=128, verbose=0)

    full = variant_fn("pbc_full_detail", {}, manifest)
    out = {}
    for name, fn in (("station crop (B-ALL pitch)", lambda c: c.rgb), ("full detail", full)):
        x_train, x_test = features([fn(c) for c in train]), features([fn(c) for c in test])
        y_train, y_test = np.array([c.label for c in train]), np.array([c.label for c in test])
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=3000)).fit(x_train, y_train)
        pred = clf.predict(x_test)
        types = sorted(set(y_test))
        out[name] = {
            "macro_f1": float(f1_score(y_test, pred, average="macro")),
            "accuracy": float((pred == y_test).mean()),
            "f1": dict(
                zip(types, map(float, f1_score(y_test, pred, average=None, labels=types)), strict=True)
            ),
        }
        print(name, json.dumps(out[name]), flush=True)
    return out


def markdown(res: dict) -> str:
    types = list(next(iter(res["views"].values()))["named_right"])
    lines = [
        "# The normal types on the cell test split: views and detail (benchmarks/normal_types.py)",
        "",
        "A screening aid for trained staff, not a diagnosis. "
        f"Command: `{res['command']}` ({res['machine']}, {res['seconds']:.0f} s). "
        f"Bundles: {', '.join(res['bundles'])}. "
        f"{res['n_test']} test crops of the other lab's pictures (the bundle's `report/test_split.txt`), "
        f"{res['n_train']} other crops of that lab for the probe.",
        "",
        "## 1. The shipped ensemble, probabilities averaged over views of each cell",
        "",
        "Decided by the bundles' own thresholds (chosen without views). Macro-F1 over the eight types; "
        "decision: the station's names (unnamed or unclassified = a miss); argmax: the top type.",
        "",
        "| views | macro-F1 (decision) | macro-F1 (argmax) | unclassified | confidently wrong | "
        + " | ".join(types)
        + " |",
        "| --- " * (5 + len(types)) + "|",
    ]
    for name, v in res["views"].items():
        lines.append(
            f"| {name} | {v['macro_f1_decision']:.4f} | {v['macro_f1_argmax']:.4f} | "
            f"{v['unclassified']:.2%} | {v['confidently_wrong']:.2%} | "
            + " | ".join(f"{v['named_right'][t]:.0%}" for t in types)
            + " |"
        )
    lines += [
        "",
        "Per type: named right. Views in order: " + ", ".join(VIEWS) + ".",
        "",
        "## 2. Linear probe on frozen ImageNet features: what the B-ALL pitch costs",
        "",
        "| crop | macro-F1 | accuracy | " + " | ".join(types) + " |",
        "| --- " * (3 + len(types)) + "|",
    ]
    for name, v in res["probe"].items():
        lines.append(
            f"| {name} | {v['macro_f1']:.4f} | {v['accuracy']:.2%} | "
            + " | ".join(f"{v['f1'].get(t, 0):.3f}" for t in types)
            + " |"
        )
    lines += ["", "Per type: F1.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--crops", required=True, type=Path, help="the crop dataset (training.cells.build_crops)")
    p.add_argument("--bundle", action="append", type=Path, help="cell bundles (default: the shipped pair)")
    p.add_argument(
        "--weights",
        default=str(
            ROOT.parent
            / "shared/pretrained/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
        ),
        help="ImageNet MobileNetV2 no-top weights for the probe (a path, or 'imagenet')",
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS / "normal_types")
    args = p.parse_args(argv)
    bundles = args.bundle or [
        ROOT / "models" / "cells-mobilenetv2-96-int8",
        ROOT / "models" / "cells-efficientnet-lite0-96-int8",
    ]
    t0 = time.perf_counter()
    test, train, manifest = test_crops(args.crops, bundles[0])
    ens = Ensemble([TFLiteModel.from_dir(str(b), args.threads) for b in bundles])
    res = {
        "command": "python benchmarks/normal_types.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "bundles": [b.name for b in bundles],
        "n_test": len(test),
        "n_train": len(train),
        "views": views(ens, test),
        "probe": probe(train, test, manifest, args.weights),
    }
    res["seconds"] = time.perf_counter() - t0
    atomic_write_bytes(args.out.with_suffix(".json"), (json.dumps(res, indent=2) + "\n").encode())
    atomic_write_bytes(args.out.with_suffix(".md"), markdown(res).encode())
    print(f"wrote {args.out}.json and .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
