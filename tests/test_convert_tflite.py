"""convert/cam.py and convert/tflite.py on a tiny Keras model of the shipped structure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from make_tiny_bundle import LABELS, tiny32_images, trained_tiny32  # noqa: E402

from convert.bundle import write_bundle  # noqa: E402
from convert.cam import add_cam_output  # noqa: E402
from convert.tflite import convert  # noqa: E402
from device.models.bundle import load_bundle  # noqa: E402
from device.models.model import TFLiteModel  # noqa: E402

pytestmark = pytest.mark.slow
SIZE = 32


@pytest.fixture(scope="module")
def tiny():
    """(model, images): the committed tiny model of the shipped structure (trained on generated smears,
    so it is well conditioned, as a real model is; fixed weights, so every CPU converts the same model)
    and the uint8 images it was trained on."""
    images, _ = tiny32_images()
    return trained_tiny32(), images


def test_cam_output_is_the_classifier_at_every_location(tiny) -> None:
    model, images = tiny
    x = images.astype(np.float32)
    both = add_cam_output(model)
    probs, cam = both.predict(x, verbose=0)
    np.testing.assert_allclose(probs, model.predict(x, verbose=0), atol=1e-6)
    assert cam.shape[0] == len(x) and cam.shape[-1] == len(LABELS) and cam.ndim == 4
    logits = cam.mean(axis=(1, 2))
    soft = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(soft / soft.sum(1, keepdims=True), probs, atol=1e-5)
    assert probs.std(0).max() > 0.1  # outputs vary with the input: the check above means something


def test_cam_needs_the_expected_layers() -> None:
    import keras

    inp = keras.Input((8, 8, 3), name="image")
    out = keras.layers.Dense(2, name="other")(keras.layers.GlobalAveragePooling2D()(inp))
    with pytest.raises(ValueError, match="no layer named 'backbone'"):
        add_cam_output(keras.Model(inp, out))


@pytest.mark.parametrize(("quantization", "atol"), [("float32", 2e-3), ("float16", 0.01), ("int8", None)])
def test_converted_bundle_runs_on_the_device_code(tiny, tmp_path: Path, quantization: str, atol) -> None:
    model, images = tiny
    rep = None
    if quantization == "int8":

        def rep():
            for img in images:
                yield [img.astype(np.float32)[None]]

    conv = convert(add_cam_output(model), quantization, rep)
    assert conv.input_dtype == ("uint8" if quantization == "int8" else "float32")
    if quantization == "int8":
        assert conv.input_quantization == (1.0, 0)  # raw camera bytes go in as they are
    write_bundle(
        tmp_path / "b",
        conv.data,
        name="t",
        architecture="tiny",
        labels=LABELS,
        input_size=(SIZE, SIZE),
        input_dtype=conv.input_dtype,
        quantization=quantization,
    )
    m = TFLiteModel(load_bundle(tmp_path / "b"))
    assert m.has_cam and [o.name for o in m.manifest.outputs] == ["probabilities", "cam"]
    got = np.stack([m.predict(img).probabilities for img in images])
    ref = model.predict(images.astype(np.float32), verbose=0)
    if quantization == "float32":
        np.testing.assert_allclose(got, ref, atol=atol)
    elif quantization == "float16":
        # half-precision weights: close on average and in every decision; a borderline image's
        # probabilities may move a few points
        assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.95
        assert np.abs(got - ref).mean() < atol and np.abs(got - ref).max() < 0.15
    else:  # int8: the decisions agree, the probabilities are close on average
        assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.85
        assert np.abs(got - ref).mean() < 0.1


def test_bad_arguments(tiny) -> None:
    model, _ = tiny
    with pytest.raises(ValueError, match="unknown quantization"):
        convert(model, "int4")
    with pytest.raises(ValueError, match="representative"):
        convert(model, "int8")


def test_representative_data_can_add_unfamiliar_images() -> None:
    from convert.tflite import UNFAMILIAR_KINDS, representative_images

    samples = sorted((Path(__file__).resolve().parents[1] / "device" / "samples").glob("*.jpg"))
    plain = list(representative_images(samples, (48, 48), limit=4)())
    more = list(representative_images(samples, (48, 48), limit=4, unfamiliar=len(UNFAMILIAR_KINDS))())
    assert len(plain) == 4 and len(more) == 4 + len(UNFAMILIAR_KINDS)
    assert all(b[0].shape == (1, 48, 48, 3) and b[0].dtype == np.float32 for b in more)
    for a, b in zip(plain, more[:4], strict=True):  # the familiar part is unchanged
        np.testing.assert_array_equal(a[0], b[0])
    grey = [b[0] for b in more[4:] if np.ptp(b[0][0].astype(int), axis=-1).max() == 0]
    assert grey, "a greyscale image is among the unfamiliar ones"
