"""Training's tf.data pipeline yields exactly the device's `load_for_model` arrays."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("tensorflow")

from device.preprocess import load_for_model  # noqa: E402
from training.pipeline import make_dataset  # noqa: E402


@pytest.mark.parametrize("resize", ["center_crop", "stretch"])
def test_pipeline_arrays_equal_device_arrays(tmp_path: Path, resize: str) -> None:
    rng = np.random.default_rng(1)
    files = []
    for i, (shape, ext) in enumerate([((120, 90, 3), ".jpg"), ((64, 100, 3), ".png"), ((40, 40), ".bmp")]):
        path = tmp_path / f"im{i}{ext}"
        cv2.imwrite(str(path), rng.integers(0, 255, shape, dtype=np.uint8))
        files.append(path)
    ds = make_dataset([str(p) for p in files], None, size=48, num_classes=2, batch=2, resize=resize)
    got = np.concatenate([b.numpy() for b in ds])
    want = np.stack([load_for_model(p, (48, 48), resize) for p in files]).astype(np.float32)
    assert got.dtype == np.float32 and got.shape == (3, 48, 48, 3)
    np.testing.assert_array_equal(got, want)


def test_labelled_pipeline_one_hot_and_order(tmp_path: Path) -> None:
    for i in range(4):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((20, 20, 3), i * 60, np.uint8))
    paths = [str(tmp_path / f"{i}.png") for i in range(4)]
    ds = make_dataset(paths, np.array([0, 1, 2, 1]), size=16, num_classes=3, batch=4)
    x, y = next(iter(ds))
    np.testing.assert_array_equal(y.numpy().argmax(1), [0, 1, 2, 1])
    np.testing.assert_array_equal(x.numpy()[:, 0, 0, 0], [0, 60, 120, 180])
