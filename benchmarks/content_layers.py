"""Which backbone depth would make the content check catch what the pooled embedding misses? (issue 11)

    .venv/bin/python benchmarks/content_layers.py runs/mobilenetv2-all4-288r [--augmented-copies 1]

For the run's Keras model, class-conditional Mahalanobis statistics (convert/content.py, Ledoit-Wolf) are
fitted on the globally pooled features of several depths: the backbone's last layer at each `--strides`
(default 8 and 16), and its output (the pooled embedding). Statistics come from every third training
image, plus `--augmented-copies` copies of each through the robust training augmentation (so what the
models are trained to handle counts as familiar). The threshold is 1.1 x the 99% quantile of the clean
validation images' distances, as `convert` does. Printed: the fraction flagged, per depth, of the
validation images under each MILD shift of benchmarks/robustness.py (the cost: a station would say
"uncertain") and of each out-of-distribution probe kind of convert/ood.py (the gain). Keras float model,
not the int8 bundle: a guide for choosing, not a card figure.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from robustness import SHIFTS  # noqa: E402

from convert import content, ood  # noqa: E402
from device.preprocess import prepare, read_image  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a `smearscope train` run directory (model.keras, split.json)")
    ap.add_argument("--augmented-copies", type=int, default=1)
    ap.add_argument("--white-reference", choices=("background", "none"), default="background")
    ap.add_argument("--strides", default="8,16", help="backbone depths to compare, as strides (e.g. 4,8,16)")
    ap.add_argument("--probes", type=int, default=12, help="probes per kind")
    args = ap.parse_args(argv)

    import keras
    import tensorflow as tf

    from convert.augment import make_augmenter
    from training.data import load_split

    model = keras.models.load_model(args.run / "model.keras", compile=False)
    backbone = model.get_layer("backbone")
    size = int(model.input_shape[1])
    names = [content.mid_layer(model, int(stride)) for stride in args.strides.split(",")]
    multi = keras.Model(backbone.input, [backbone.get_layer(n).output for n in names] + [backbone.output])
    depths = [*names, "output (shipped)"]
    wr = None if args.white_reference == "none" else args.white_reference

    def prep(rgb: np.ndarray) -> np.ndarray:
        return prepare(rgb, (size, size), white_reference=wr)

    def feats(images: np.ndarray) -> list[np.ndarray]:
        outs = multi.predict(np.asarray(images, np.float32), batch_size=32, verbose=0)
        return [o.mean(axis=(1, 2)) for o in outs]

    split = load_split(args.run / "split.json")
    clean = np.stack([prep(read_image(p)) for p in split.paths("train")[::3]])
    y = split.label_ids("train")[::3]
    train = feats(clean)
    augment = make_augmenter(0)
    ys = [y]
    for _ in range(args.augmented_copies):
        batches = [
            np.clip(augment(tf.constant(clean[i : i + 32].astype("float32"))).numpy(), 0, 255)
            for i in range(0, len(clean), 32)
        ]
        extra = feats(np.concatenate(batches).astype(np.uint8))
        train = [np.concatenate([a, b]) for a, b in zip(train, extra, strict=True)]
        ys.append(y)
    y_all = np.concatenate(ys)
    k = len(split.labels)
    stats = [content.fit_statistics(f, y_all, k) for f in train]
    val_raw = [read_image(p) for p in split.paths("val")]
    val = feats(np.stack([prep(r) for r in val_raw]))
    limits = [content.choose_threshold(content.distances(f, s)) for f, s in zip(val, stats, strict=True)]

    def flagged(images: list[np.ndarray]) -> list[float]:
        fs = feats(np.stack(images))
        return [
            float((content.distances(f, s) > t).mean()) for f, s, t in zip(fs, stats, limits, strict=True)
        ]

    print(f"{'fraction flagged':30s} " + " ".join(f"{d[:22]:>22s}" for d in depths))
    for name, sev in SHIFTS.items():
        fn = sev["mild"][1]
        rates = flagged([prep(fn(r, i)) for i, r in enumerate(val_raw)])
        print(f"{'mild ' + name:30s} " + " ".join(f"{x:22.2f}" for x in rates))
    test = split.paths("test")
    smears = [read_image(p) for p in test[:: max(1, len(test) // args.probes)][: args.probes]]
    kinds: dict[str, list[np.ndarray]] = {}
    for kind, img in ood.probes(smears, n=args.probes, seed=0):
        kinds.setdefault(kind, []).append(prep(img))
    for kind, images in kinds.items():
        print(f"{'probe ' + kind:30s} " + " ".join(f"{x:22.2f}" for x in flagged(images)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
