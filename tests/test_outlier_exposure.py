"""Outlier exposure (training/outlier_exposure.py): which images are re-coloured, how far, what they are
taught, and that it reaches a real training run's dataset."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")

import tensorflow as tf  # noqa: E402

from convert.augment import RESIDUAL_LOG, WHITE_LEVEL, make_augmenter, residual_cast  # noqa: E402
from training.outlier_exposure import far_recolour, outlier_exposure  # noqa: E402
from training.pipeline import make_dataset  # noqa: E402


def _smear(n: int = 16, size: int = 48) -> np.ndarray:
    """White-level background with a violet 'nucleus' and a pink 'red cell' in each image."""
    x = np.full((n, size, size, 3), WHITE_LEVEL, np.float32)
    x[:, 8:20, 8:20] = (120, 60, 160)
    x[:, 28:40, 28:40] = (220, 150, 160)
    return x


def test_far_recolour_keeps_the_background_and_moves_the_stain_far():
    tf.random.set_seed(1)
    x = _smear(64)
    y = far_recolour(tf.constant(x)).numpy()
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 255
    np.testing.assert_allclose(y[:, 0, 0], WHITE_LEVEL, atol=0.5)  # the device's prepare sees the same white
    # the nucleus's optical density is scaled by at least x1.7 or at most x0.55 in some channel
    od = -np.log(np.maximum(x[:, 12, 12], 1) / 255.0) + np.log(WHITE_LEVEL / 255.0)
    od_far = -np.log(np.maximum(y[:, 12, 12], 1) / 255.0) + np.log(WHITE_LEVEL / 255.0)
    ratio = od_far / od
    far = (ratio.max(axis=1) >= 1.5) | (ratio.min(axis=1) <= 0.6)
    assert far.mean() > 0.9, ratio  # (one-stain-only re-colourings can keep a channel near x1)


def test_a_fraction_of_the_batch_becomes_outliers_with_uniform_labels_and_mean_class_weight():
    tf.random.set_seed(2)
    x = _smear(400, 24)
    labels = tf.one_hot(np.arange(400) % 4, 4)
    images, out, w = outlier_exposure(0.25, [2.0, 1.0, 1.0, 0.5])(tf.constant(x), labels)
    out, w, images = out.numpy(), w.numpy(), images.numpy()
    uniform = np.all(np.isclose(out, 0.25), axis=1)
    assert 0.15 < uniform.mean() < 0.35
    changed = np.any(np.abs(images - x) > 1.0, axis=(1, 2, 3))
    np.testing.assert_array_equal(changed, uniform)  # exactly the outliers were re-coloured
    np.testing.assert_allclose(w[uniform], 1.125)  # mean of the class weights
    kept = ~uniform
    np.testing.assert_allclose(w[kept], np.array([2.0, 1.0, 1.0, 0.5])[np.arange(400)[kept] % 4])
    np.testing.assert_array_equal(out[kept], labels.numpy()[kept])
    with pytest.raises(ValueError, match="fraction"):
        outlier_exposure(1.0)


def test_the_training_dataset_yields_weighted_outlier_batches(tmp_path):
    import cv2

    paths = []
    for i in range(8):
        p = tmp_path / f"img{i}.png"
        cv2.imwrite(str(p), _smear(1, 64)[0].astype(np.uint8))
        paths.append(p)
    ds = make_dataset(paths, np.arange(8) % 2, size=32, num_classes=2, batch=8, pairs=outlier_exposure(0.5))
    x, y, w = next(iter(ds))
    assert x.shape == (8, 32, 32, 3) and y.shape == (8, 2) and w.shape == (8,)


def test_residual_cast_gives_some_images_a_bounded_per_channel_cast_and_leaves_the_rest():
    tf.random.set_seed(4)
    x = _smear(200, 16) * 0.8  # room above: no clipping
    y = residual_cast(tf.constant(x), 0.5).numpy()
    ratio = y[:, 0, 0] / x[:, 0, 0]  # per image and channel
    cast = np.any(np.abs(ratio - 1) > 1e-4, axis=1)
    assert 0.35 < cast.mean() < 0.65
    assert np.all(ratio >= np.exp(-RESIDUAL_LOG) - 1e-4) and np.all(ratio <= np.exp(RESIDUAL_LOG) + 1e-4)
    np.testing.assert_array_equal(y[~cast], x[~cast])
    # the robust augmenter takes it (off by default: the shipped recipe)
    out = make_augmenter(0, white_residual=0.5)(tf.constant(_smear(4, 32)))
    assert out.shape == (4, 32, 32, 3)


def test_the_share_of_per_channel_outliers_can_be_chosen():
    """Per-channel re-colourings (share 1) scale each channel's optical density on its own (a red-only
    density stays red-only); stain ones (share 0) scale haematoxylin and eosin, which mixes the
    channels; a share outside [0, 1] is refused."""
    tf.random.set_seed(5)
    x = np.full((64, 8, 8, 3), WHITE_LEVEL, np.float32)
    x[:, 2:6, 2:6, 0] = 120.0  # density in red only
    ch = far_recolour(tf.constant(x), 1.0).numpy()
    np.testing.assert_allclose(ch[:, 3, 3, 1:], WHITE_LEVEL, atol=0.5)
    st = far_recolour(tf.constant(x), 0.0).numpy()
    moved = np.abs(st[:, 3, 3, 1:] - WHITE_LEVEL).max(axis=1) > 2.0
    assert moved.mean() > 0.9
    np.testing.assert_allclose(st[:, 0, 0], WHITE_LEVEL, atol=0.5)  # the background stays white
    with pytest.raises(ValueError, match="channel share"):
        far_recolour(tf.constant(x), 1.5)
    with pytest.raises(ValueError, match="channel share"):
        outlier_exposure(0.1, None, -0.1)
