"""tf.data input pipelines fed by THE shared preprocessing (`device.preprocess.load_for_model`).

paths -> numpy_function(load_for_model) -> cache (uint8) -> shuffle -> batch -> augment (train only)
-> prefetch. Because decoding is the device's own function, training sees the device's exact arrays.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from device.preprocess import load_for_model


def load_array(
    path: str | bytes, size: int, resize: str = "center_crop", white_reference: str | None = None
) -> np.ndarray:
    """What the pipeline yields for one file (uint8 H x W x 3)."""
    if isinstance(path, bytes):
        path = path.decode()
    return load_for_model(path, (size, size), resize, white_reference=white_reference)


def make_dataset(
    paths: Sequence[str],
    labels: np.ndarray | None,
    *,
    size: int,
    num_classes: int,
    batch: int = 32,
    shuffle: bool = False,
    augment: Callable[[tf.Tensor], tf.Tensor] | None = None,
    seed: int = 42,
    resize: str = "center_crop",
    white_reference: str | None = None,
    cache: bool = True,
    pairs: Callable[[tf.Tensor, tf.Tensor], tuple] | None = None,
) -> tf.data.Dataset:
    """Batches of (float32 0-255 images, one-hot labels), or images only when `labels` is None.
    `pairs`: a last per-batch step on (images, labels) after `augment`, e.g. outlier exposure
    (training/outlier_exposure.py), which may add sample weights."""
    ds = tf.data.Dataset.from_tensor_slices(list(map(str, paths)))

    def load(p: tf.Tensor) -> tf.Tensor:
        img = tf.numpy_function(
            lambda b: load_array(b, size, resize, white_reference), [p], tf.uint8, stateful=False
        )
        img.set_shape((size, size, 3))
        return img

    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if labels is not None:
        ys = tf.data.Dataset.from_tensor_slices(tf.one_hot(np.asarray(labels), num_classes))
        ds = tf.data.Dataset.zip((ds, ys))
    if cache:
        ds = ds.cache()
    if shuffle:
        ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch)

    def to_float(x):
        x = tf.cast(x, tf.float32)
        return augment(x) if augment is not None else x

    if labels is not None:
        ds = ds.map(lambda x, y: (to_float(x), y), num_parallel_calls=tf.data.AUTOTUNE)
        if pairs is not None:
            ds = ds.map(pairs, num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.map(to_float, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
