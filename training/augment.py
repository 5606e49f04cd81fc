"""Training-only augmentation on float32 0-255 RGB batches (B, H, W, 3).

Blood-smear cells have no orientation, so flips and 90° turns are free; small rotation/zoom/shift and
brightness/contrast/hue/saturation (stain) jitter mimic other microscopes and staining batches.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def _rot90_each(images: tf.Tensor, seed: int | None) -> tf.Tensor:
    """Rotate every image of the batch by its own random multiple of 90° (images must be square)."""
    k = tf.random.uniform([tf.shape(images)[0]], 0, 4, dtype=tf.int32, seed=seed)
    rotated = [tf.image.rot90(images, k=i) for i in range(4)]
    stacked = tf.stack(rotated, axis=1)  # (B, 4, H, W, C)
    return tf.gather(stacked, k, axis=1, batch_dims=1)


def _colour(images: tf.Tensor, strength: float, seed: int | None) -> tf.Tensor:
    """Per-image brightness/contrast/hue/saturation jitter on 0-255 floats."""

    def one(img: tf.Tensor) -> tf.Tensor:
        x = img / 255.0
        x = tf.image.random_brightness(x, 0.08 * strength, seed=seed)
        x = tf.image.random_contrast(x, 1 - 0.15 * strength, 1 + 0.15 * strength, seed=seed)
        x = tf.image.random_hue(x, 0.04 * strength, seed=seed)
        x = tf.image.random_saturation(x, 1 - 0.2 * strength, 1 + 0.2 * strength, seed=seed)
        return tf.clip_by_value(x, 0.0, 1.0) * 255.0

    return tf.map_fn(one, images, fn_output_signature=tf.float32)


def make_augmenter(seed: int | None = None, strength: float = 1.0, colour: float = 1.0):
    """Return fn(images) -> augmented images, for `dataset.map` after batching."""
    geometric = keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal_and_vertical", seed=seed),
            keras.layers.RandomRotation(0.04 * strength, fill_mode="reflect", seed=seed),
            keras.layers.RandomZoom(0.1 * strength, fill_mode="reflect", seed=seed),
            keras.layers.RandomTranslation(0.05 * strength, 0.05 * strength, fill_mode="reflect", seed=seed),
        ],
        name="augment",
    )

    def augment(images: tf.Tensor) -> tf.Tensor:
        images = _rot90_each(images, seed)
        images = geometric(images, training=True)
        return _colour(images, strength * colour, seed) if strength * colour > 0 else images

    return augment
