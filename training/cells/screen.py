"""Drop B-ALL crops whose image label is implausible for the cell (multiple-instance screening):
`python -m training.cells.screen --crops DIR --weights MOBILENETV2_H5`.

A B-ALL folder names the FIELD; a field of blasts may also hold a neutrophil or an eosinophil, which must
not be taught as a blast. A first classifier that knows only normal cells (logistic regression on frozen
ImageNet MobileNetV2 features of the PBC crops and of their stain copies in the B-ALL lab's colour) reads
every B-ALL crop; a crop it calls one of `--drop-types` with probability >= `--min-prob` is removed from
the dataset (with its stain copy) and listed in the manifest's `screened_out`, with counts per field
class and type. Lymphoid and monocytoid calls are kept: blasts and hematogones resemble lymphocytes and
monocytes, and a first model that never saw a blast cannot tell them apart.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from device.errors import SmearscopeError
from device.fsutil import atomic_write_bytes
from device.preprocess import read_image
from training.cells.build_crops import MANIFEST

DEFAULT_DROP = "neutrophil,eosinophil,basophil,platelet"


def features(paths: list[Path], weights: str, size: int, batch: int = 128) -> np.ndarray:
    import keras

    from training.models import build_backbone  # TensorFlow only here

    net = build_backbone("mobilenetv2", size, weights=weights)
    pooled = keras.Model(net.input, keras.layers.GlobalAveragePooling2D()(net.output))
    out = []
    for i in range(0, len(paths), batch):
        x = np.stack([read_image(p) for p in paths[i : i + batch]]).astype(np.float32)
        out.append(pooled.predict(x, verbose=0))
    return np.concatenate(out)


def screen(root: Path, weights: str, drop_types: set[str], min_prob: float) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    doc = json.loads((root / MANIFEST).read_text())
    if doc.get("screened_out") is not None:
        raise SmearscopeError(f"{root} was screened already (rebuild it to screen again)")
    crops = doc["crops"]
    pbc = [r for r in crops if r["lab"] == "pbc"]
    ball = [r for r in crops if r["lab"] == "ball" and r["copy_of"] is None]
    size = int(doc["crop"]["size"])
    x_pbc = features([root / r["path"] for r in pbc], weights, size)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1))
    clf.fit(x_pbc, [r["label"] for r in pbc])
    proba = clf.predict_proba(features([root / r["path"] for r in ball], weights, size))
    classes = list(clf.classes_)
    top = proba.argmax(axis=1)
    called = Counter()
    out = []
    for r, k, p in zip(ball, top, proba.max(axis=1), strict=True):
        called[(r["source_class"], classes[k], bool(p >= min_prob))] += 1
        if classes[k] in drop_types and p >= min_prob:
            out.append(
                {"path": r["path"], "label": r["label"], "called": classes[k], "p": round(float(p), 4)}
            )
    gone = {o["path"] for o in out}
    kept = []
    for r in crops:
        if r["path"] in gone or r["copy_of"] in gone:
            (root / r["path"]).unlink(missing_ok=True)
        else:
            kept.append(r)
    doc["crops"] = kept
    doc["screened_out"] = out
    doc["screening"] = {
        "rule": f"B-ALL crops called one of {sorted(drop_types)} with p >= {min_prob} by a PBC-only "
        "classifier (frozen ImageNet MobileNetV2 features + logistic regression) are removed",
        "removed_per_field_class": dict(Counter(o["label"] for o in out)),
        "removed_per_type": dict(Counter(o["called"] for o in out)),
        "calls": {f"{c}|{t}|{'confident' if s else 'unsure'}": n for (c, t, s), n in sorted(called.items())},
        "removed_with_copies": len(crops) - len(kept),
    }
    atomic_write_bytes(root / MANIFEST, (json.dumps(doc, indent=1) + "\n").encode())
    return doc["screening"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.cells.screen", description=__doc__.split("\n")[0])
    p.add_argument("--crops", required=True, help="a crop dataset from training.cells.build_crops")
    p.add_argument("--weights", required=True, help="ImageNet MobileNetV2 no-top .h5")
    p.add_argument(
        "--drop-types", default=DEFAULT_DROP, help=f"PBC types never taught as a B-ALL label ({DEFAULT_DROP})"
    )
    p.add_argument("--min-prob", type=float, default=0.9)
    args = p.parse_args(argv)
    if not Path(args.weights).is_file():
        print(f"error: {args.weights}: no such file", file=sys.stderr)
        return 2
    try:
        rep = screen(Path(args.crops), args.weights, set(args.drop_types.split(",")), args.min_prob)
    except SmearscopeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(rep, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
