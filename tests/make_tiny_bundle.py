"""Build the tiny test bundle committed at tests/data/tiny-bundle/ (and the helpers tests share).

    .venv/bin/python tests/make_tiny_bundle.py [OUT_DIR]
    .venv/bin/python tests/make_tiny_bundle.py --tiny32     # remake tests/data/tiny-mobilenetv2-32.npz

A MobileNetV2 (alpha 0.35, weights=None) at 64x64 with the shipped models' exact structure
(image -> backbone -> pool -> dropout -> classifier), trained for a few epochs on generated "smears"
whose classes differ by colour and cell size, converted through convert/ to full-int8 TFLite with uint8
input and a CAM output, and written as a bundle with a manifest. Device-side tests load it with
LiteRT only (no TensorFlow). Its accuracy means nothing medically: it is a fixture.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

LABELS = ("Benign", "Early", "Pre", "Pro")
#: Per class: (background RGB, cell RGB, cell radius range) — differences a tiny net learns at once.
STYLES = {
    "Benign": ((230, 170, 190), (150, 40, 150), (5, 8)),
    "Early": ((170, 180, 235), (40, 40, 170), (9, 13)),
    "Pre": ((240, 220, 150), (170, 60, 40), (6, 10)),
    "Pro": ((160, 225, 170), (30, 110, 60), (10, 15)),
}
SIZE = 64
OUT = Path(__file__).resolve().parent / "data" / "tiny-bundle"
#: A tiny MobileNetV2 (alpha 0.35, 32 px) trained once by `trained_tiny32(make=True)` and committed
#: (float16 weights): a model trained in the test would differ from one CPU to the next, and so would
#: every figure measured on it.
TINY32 = Path(__file__).resolve().parent / "data" / "tiny-mobilenetv2-32.npz"


def _test_key() -> Path:
    """The suite's signing key: made fresh for each test run in a temporary folder (no key is ever
    committed), shared with re-imports through $SMEARSCOPE_TEST_SIGNING_KEY. conftest.py adds its public
    half to $SMEARSCOPE_TRUSTED_KEYS so fixture bundles load like signed production bundles."""
    known = os.environ.get("SMEARSCOPE_TEST_SIGNING_KEY")
    if known and Path(known).is_file():
        return Path(known)
    from device.models.signing import generate_keypair

    folder = Path(tempfile.mkdtemp(prefix="smearscope-test-key-"))
    atexit.register(shutil.rmtree, folder, True)
    key, _, _ = generate_keypair(folder / "test-signing.key", "smearscope test suite")
    os.environ["SMEARSCOPE_TEST_SIGNING_KEY"] = str(key)
    return key


TEST_KEY = _test_key()
TEST_PUB = TEST_KEY.with_suffix(".pub")
#: tests/data/tiny-bundle (committed unsigned) signed with this run's test key: what tests load.
SIGNED_TINY = TEST_KEY.parent / "tiny-bundle"


def sign_test(bundle: str | Path) -> Path:
    """(Re-)sign a fixture bundle with the test key, e.g. after a test edited its manifest."""
    from device.models.signing import sign_bundle

    sign_bundle(bundle, TEST_KEY)
    return Path(bundle)


if not (SIGNED_TINY / "signature.json").is_file() and (OUT / "manifest.json").is_file():
    shutil.copytree(OUT, SIGNED_TINY, dirs_exist_ok=True)
    sign_test(SIGNED_TINY)


def make_cell_bundle(
    dest: str | Path, *, input_um_per_px: float = 0.375, pitch_um: float | None = 0.479
) -> Path:
    """The tiny bundle as a signed CELL bundle at `dest`: its 64 px input is a square of 64 x
    `input_um_per_px` µm around one cell; "Benign" is the one label that is not a blast. Its calls mean
    nothing (a fixture): tests of decisions stub the ensemble's probabilities."""
    import json

    dest = Path(dest)
    shutil.copytree(OUT, dest)
    path = dest / "manifest.json"
    m = json.loads(path.read_text())
    m["name"] = "tiny-cells-int8"
    m["input"]["um_per_px"] = input_um_per_px
    m["input"]["white_reference"] = None
    m["cells"] = {"pitch_um": pitch_um, "blast_threshold": 0.9, "type_threshold": 0.6}
    path.write_text(json.dumps(m, indent=2) + "\n")
    return sign_test(dest)


def synth_smear(label: str, rng: np.random.Generator, size: int = 96) -> np.ndarray:
    """An RGB uint8 image of `label`'s style: tinted background, a few round 'cells', noise."""
    bg, cell, (rmin, rmax) = STYLES[label]
    img = np.empty((size, size, 3), np.float32)
    img[:] = np.array(bg, np.float32) + rng.normal(0, 6, 3)
    for _ in range(int(rng.integers(3, 7))):
        c = (int(rng.integers(0, size)), int(rng.integers(0, size)))
        r = int(rng.integers(rmin, rmax + 1)) * size // 96
        colour = np.clip(np.array(cell, np.float32) + rng.normal(0, 12, 3), 0, 255)
        cv2.circle(img, c, max(r, 2), colour.tolist(), -1)
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_dataset(
    root: str | Path, n_per_class: int = 8, *, seed: int = 0, size: int = 96, labels=LABELS
) -> list[tuple[Path, str]]:
    """Write `root/<label>/<label>_<i>.jpg` images; returns [(path, label)]."""
    rng = np.random.default_rng(seed)
    out = []
    for label in labels:
        folder = Path(root) / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            rgb = synth_smear(label, rng, size)
            path = folder / f"{label}_{i:03d}.jpg"
            cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
            out.append((path, label))
    return out


def build_model(size: int = SIZE, k: int = len(LABELS), alpha: float = 0.35, seed: int = 0):
    """The shipped models' structure with a random-weight MobileNetV2 backbone (training's own builder)."""
    import keras

    from training.models import build_model as build

    keras.utils.set_random_seed(seed)
    return build("mobilenetv2", k, size=size, alpha=alpha, weights="none", dropout=0.2)


def fit_tiny(model, x: np.ndarray, y: np.ndarray, epochs: int = 12, seed: int = 0) -> float:
    """Train the whole tiny net from scratch, then set every BatchNorm's moving statistics to the
    training set's statistics: after a few dozen steps the default momentum (0.999) leaves them near
    their initial values and the inference-mode model would be at chance."""
    import keras

    from training.models import recalibrate_batchnorm

    keras.utils.set_random_seed(seed)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=epochs, batch_size=16, verbose=0, shuffle=True)
    recalibrate_batchnorm(model, x)
    return float((model.predict(x, verbose=0).argmax(1) == y).mean())


def tiny32_images() -> tuple[np.ndarray, np.ndarray]:
    """The 48 generated 32 px smears (12 per label) TINY32 was trained on, and their label indices."""
    rng = np.random.default_rng(0)
    labels = np.arange(48) % 4
    return np.stack([synth_smear(LABELS[i], rng, 32) for i in labels]), labels


def trained_tiny32(make: bool = False):
    """The committed tiny model (TINY32) with its weights loaded; `make=True` trains and writes it."""
    model = build_model(32, len(LABELS), seed=1)
    if make:
        images, labels = tiny32_images()
        fit_tiny(model, images.astype(np.float32), labels, epochs=16)
        np.savez_compressed(TINY32, *[w.astype(np.float16) for w in model.get_weights()])
    with np.load(TINY32) as saved:
        model.set_weights([saved[f"arr_{i}"].astype(np.float32) for i in range(len(saved.files))])
    return model


def build(out: Path = OUT, *, seed: int = 0) -> Path:
    import tempfile

    from convert.bundle import write_bundle
    from convert.cam import add_cam_output
    from convert.tflite import convert, representative_images
    from device.preprocess import load_for_model

    with tempfile.TemporaryDirectory() as tmp:
        items = write_dataset(tmp, 24, seed=seed)
        x = np.stack([load_for_model(p, (SIZE, SIZE)) for p, _ in items]).astype(np.float32)
        y = np.array([LABELS.index(lb) for _, lb in items])
        model = build_model(seed=seed)
        acc = fit_tiny(model, x, y, seed=seed)
        print(f"tiny model train accuracy {acc:.3f}")
        rep = representative_images([p for p, _ in items], (SIZE, SIZE), limit=64)
        conv = convert(add_cam_output(model), "int8", rep)
    write_bundle(
        out,
        conv.data,
        name="tiny-mobilenetv2-int8",
        architecture="mobilenetv2-0.35 64px (test fixture)",
        labels=LABELS,
        input_size=(SIZE, SIZE),
        input_dtype=conv.input_dtype,
        quantization="int8",
        temperature=1.0,
        abstain_threshold=0.5,
        metrics={
            "split": "train",
            "split_note": "test fixture on generated images; meaningless",
            "accuracy": acc,
        },
        provenance={"made_by": "tests/make_tiny_bundle.py", "seed": seed},
    )
    (out / "MODEL.md").write_text(
        "# tiny-mobilenetv2-int8 (test fixture)\n\nA MobileNetV2 (alpha 0.35, 64 px) trained from "
        "scratch on generated images, for tests only. "
        "Not a medical model. Screening aid for trained staff, not a diagnosis.\n"
    )
    print(
        f"wrote {out} ({(out / 'model.tflite').stat().st_size / 1024:.0f} KiB), unsigned (tests sign a copy)"
    )
    return out


if __name__ == "__main__":
    if sys.argv[1:] == ["--tiny32"]:
        trained_tiny32(make=True)
    else:
        build(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
