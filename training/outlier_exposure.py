"""Outlier exposure while fine-tuning (Hendrycks et al., "Deep anomaly detection with outlier exposure",
ICLR 2019): a fraction of every training batch is re-coloured far past any real stain and taught the
UNIFORM label, so the classifier itself learns to be unsure on such fields, instead of only a probe on
frozen features (convert/outliers.py) trying to separate them afterwards.

Why: the robust augmentation (convert/augment.py) teaches the backbone to see through stain, white
balance and gamma; fields whose whole stain is about twice as dark then sit inside the familiar region of
the pooled embedding, and neither the class-conditional Mahalanobis distance nor a probe fitted on frozen
features can tell them from real fields (measured on the shipped MobileNetV2: 1 of 48 of each far-stain
probe family was called confidently; models/*/report/robustness.md). Early-layer feature statistics do
separate them, but fire as much on mild noise, JPEG and rotation (camera fingerprints): no detector.

The re-colourings are the same two families as convert/outliers.py (and the probes of convert/ood.py
share them, which a report must say): haematoxylin and eosin amounts, or each channel's optical density,
scaled by far factors (x0.25-0.55 or x1.7-2.8, against training's ±15% stain jitter and gamma 0.8-1.3),
the background re-normalised to the white level as the device's `prepare` does. The loss is the model's
own categorical cross-entropy: with a uniform target it is OE's term up to a constant. Per-image weights
carry the class weights (a uniform row gets their mean), so `fit` needs no `class_weight`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import tensorflow as tf

from convert.augment import HED_FROM_RGB, RGB_FROM_HED, WHITE_LEVEL
from convert.outliers import HIGH, LOW  # the far factors, one definition for the probe head and this


def _far(b: tf.Tensor, k: int) -> tf.Tensor:
    lo = tf.random.uniform([b, k], *LOW)
    hi = tf.random.uniform([b, k], *HIGH)
    return tf.where(tf.random.uniform([b, k]) < 0.5, lo, hi)


def far_recolour(images: tf.Tensor, channel_share: float = 0.5) -> tf.Tensor:
    """Each float32 0-255 image (B, H, W, 3) re-coloured far outside the training ranges (module doc):
    by their haematoxylin/eosin amounts (DAB kept; in 30% of those only one stain is off), or, for a
    `channel_share` of them, by every channel's optical density; the background (the white level) stays
    where it was. Each channel's own OD scaling also makes strong colour casts inside the cells (0: none
    of those; a whole stain twice as dark is in both families)."""
    _check_share(channel_share)
    b = tf.shape(images)[0]
    hed_from_rgb = tf.constant(HED_FROM_RGB, tf.float32)
    rgb_from_hed = tf.constant(RGB_FROM_HED, tf.float32)
    stains = _far(b, 2)
    one_only = tf.random.uniform([b]) < 0.3
    near = tf.random.uniform([b], 0.9, 1.1)
    which = tf.random.uniform([b]) < 0.5
    stains = tf.where(
        one_only[:, None],
        tf.stack([tf.where(which, near, stains[:, 0]), tf.where(which, stains[:, 1], near)], axis=1),
        stains,
    )
    gains = tf.concat([stains, tf.ones([b, 1])], axis=1)
    mix_hed = tf.einsum("cd,bd,de->bce", hed_from_rgb, gains, rgb_from_hed)
    mix_channels = tf.linalg.diag(_far(b, 3))
    mix = tf.where((tf.random.uniform([b]) >= channel_share)[:, None, None], mix_hed, mix_channels)
    od_white = -math.log(WHITE_LEVEL / 255.0)
    od = -tf.math.log(tf.maximum(images, 1.0) / 255.0)
    od = tf.einsum("bhwc,bce->bhwe", od, mix)
    white = tf.einsum("c,bce->be", tf.fill([3], od_white), mix)  # where the background went
    od = od - white[:, None, None, :] + od_white
    return tf.clip_by_value(255.0 * tf.exp(-od), 0.0, 255.0)


def _check_share(share: float) -> None:
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"the outlier channel share must be in [0, 1], got {share}")


def outlier_exposure(
    fraction: float, class_weights: Sequence[float] | None = None, channel_share: float = 0.5
) -> Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor, tf.Tensor]]:
    """fn(images, one-hot labels) -> (images, labels, sample weights) for `dataset.map` after the
    augmentation: a random `fraction` of each batch re-coloured (`far_recolour`) with a uniform label."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"outlier-exposure fraction must be in (0, 1), got {fraction}")
    _check_share(channel_share)
    cw = None if class_weights is None else tf.constant(list(class_weights), tf.float32)

    def apply(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        b = tf.shape(images)[0]
        chosen = tf.where(tf.random.uniform([b]) < fraction)[:, 0]

        def recolour() -> tf.Tensor:
            far = far_recolour(tf.gather(images, chosen), channel_share)
            return tf.tensor_scatter_nd_update(images, chosen[:, None], far)

        images = tf.cond(tf.size(chosen) > 0, recolour, lambda: images)
        mask = tf.scatter_nd(chosen[:, None], tf.ones_like(chosen, tf.bool), [tf.cast(b, tf.int64)])
        uniform = tf.ones_like(labels) / tf.cast(tf.shape(labels)[1], labels.dtype)
        labels = tf.where(mask[:, None], uniform, labels)
        weights = tf.ones([b]) if cw is None else tf.reduce_sum(labels * cw, axis=1)
        return images, labels, weights

    return apply
