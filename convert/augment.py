"""The training augmentation on float32 0-255 RGB batches (B, H, W, 3), applied on the fly after batching.
Training trains with it and convert re-runs it for the content check's statistics; it lives in convert,
the layer below training, so both may import it.

Two recipes (`make_augmenter(recipe=...)`):

* ``basic`` — a light recipe: flips, 90° turns, small rotation/zoom/shift, brightness/contrast/hue/sat.
* ``robust`` (default) — models what differs between two stations. Every draw is per image; the
  ranges below are at ``strength=1`` (``colour`` scales the stain and white-balance/gamma ranges), and
  each component is applied to a random fraction ``p`` of the images. To stay cheap on a CPU, stain, lamp,
  white balance and gamma are ONE pass through optical density (`colour`), and blur/noise/JPEG run on the
  chosen images only (`on_subset`):

  ==============  ====  ===============================================================================
  component       p     range
  ==============  ====  ===============================================================================
  geometry        1     ONE affine resample: a mirror (p 0.5) and any rotation (±180°; cells have no
                        orientation), scale log-uniform ×[0.75, 1.33] (≥ ±25% around the model's
                        µm/px), shift ±5%; reflect fill
  stain           0.8   optical density (−log I/I0) rotated into haematoxylin/eosin/DAB space (the
                        3×3 Ruifrok-Johnston matrix skimage's rgb2hed uses): each stain ×[0.85, 1.15]
                        and +[−0.04, 0.04] OD
  white/gamma     0.8   the RAW camera image is modelled: per-channel gains [0.8, 1.25] and gamma
                        [0.8, 1.3] (top: `--gamma-max`) applied to the background-normalised image,
                        then the background re-normalised to 235 as the device's prepare does — what
                        is left is the residual (clipping, gamma's non-linearity), not a cast the
                        device removes
  illumination    0.5   vignetting 1 − v·r², v ∈ [0, 0.35], centre ±30% off; plus a linear
                        gradient ±12% across the field (uneven Köhler illumination)
  defocus         0.3   Gaussian blur, σ ∈ [0.3, 1.6] px at the model's input size
  noise           0.4   read noise σ ∈ [0, 6] plus shot noise √I · [0, 0.5] (0-255 scale)
  jpeg            0.2   JPEG re-encoding at quality [35, 95] (``tf.image.adjust_jpeg_quality``)
  ==============  ====  ===============================================================================

Optional, off in the shipped recipe: `residual_cast` (`train --white-residual F`), the per-channel cast
(e^±0.2) an imperfect white reference leaves on a station whose background clips.

The out-of-distribution probes of convert/ood.py (stains far outside these ranges, blur/compression past
use) and the robustness report's shift severities are deliberately wider than or at the edge of these.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import keras
import numpy as np
import tensorflow as tf

RECIPES = ("robust", "basic")
COMPONENTS = ("geometry", "stain", "white", "illumination", "defocus", "noise", "jpeg")
WHITE_LEVEL = 235.0  # device.colour.WHITE_LEVEL (kept literal: training must not import cv2 here)

#: The Ruifrok & Johnston stain vectors (rows: haematoxylin, eosin, DAB) as skimage's `rgb_from_hed`.
RGB_FROM_HED = np.array(
    [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]],
    dtype=np.float64,
)
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED)

# Ranges at strength 1 (documented above; tests check outputs stay inside what they imply).
SCALE_RANGE = (0.75, 1.0 / 0.75)
SHIFT = 0.05
STAIN_GAIN = 0.15
STAIN_BIAS = 0.04
WB_GAIN = (0.8, 1.25)
GAMMA = (0.8, 1.3)
VIGNETTE = 0.35
GRADIENT = 0.12
BLUR_SIGMA = (0.3, 1.6)
NOISE_READ = 6.0
NOISE_SHOT = 0.5
JPEG_QUALITY = (35, 95)
#: The white reference's own error on a station whose background clips in a channel (the guessed red):
#: on the test split under red gains 1.12-1.32 its log error spans -0.21..+0.12 (p1-p99; docs/acquisition.md).
#: Training images get an exact reference; `residual_cast` gives a fraction of them such a leftover cast.
RESIDUAL_LOG = 0.2
PROBABILITY = {
    "stain": 0.8,
    "white": 0.8,
    "illumination": 0.5,
    "defocus": 0.3,
    "noise": 0.4,
    "jpeg": 0.2,
}


def _rot90_each(images: tf.Tensor, seed: int | None) -> tf.Tensor:
    """Rotate every image of the batch by its own random multiple of 90° (images must be square)."""
    k = tf.random.uniform([tf.shape(images)[0]], 0, 4, dtype=tf.int32, seed=seed)
    rotated = [tf.image.rot90(images, k=i) for i in range(4)]
    stacked = tf.stack(rotated, axis=1)  # (B, 4, H, W, C)
    return tf.gather(stacked, k, axis=1, batch_dims=1)


def _flip_each(images: tf.Tensor) -> tf.Tensor:
    b = tf.shape(images)[0]
    lr = tf.random.uniform([b, 1, 1, 1]) < 0.5
    images = tf.where(lr, tf.reverse(images, axis=[2]), images)
    ud = tf.random.uniform([b, 1, 1, 1]) < 0.5
    return tf.where(ud, tf.reverse(images, axis=[1]), images)


def _uniform(b: tf.Tensor, lo: float, hi: float, shape: Iterable[int] = ()) -> tf.Tensor:
    return tf.random.uniform([b, *shape], lo, hi)


def affine(images: tf.Tensor, strength: float) -> tf.Tensor:
    """One bilinear resample per image: mirror, any rotation, log-uniform scale, shift (reflect fill).

    The mirror and the full-circle rotation include the dihedral flips/90° turns at no extra pass.
    """
    b = tf.shape(images)[0]
    h = tf.cast(tf.shape(images)[1], tf.float32)
    w = tf.cast(tf.shape(images)[2], tf.float32)
    theta = _uniform(b, -math.pi, math.pi)
    mirror = tf.where(tf.random.uniform([b]) < 0.5, -1.0, 1.0)
    lo, hi = (math.log(s) * strength for s in SCALE_RANGE)
    scale = tf.exp(_uniform(b, lo, hi))  # >1: the content appears larger (zoom in)
    tx = _uniform(b, -SHIFT, SHIFT) * strength * w
    ty = _uniform(b, -SHIFT, SHIFT) * strength * h
    cos, sin = tf.cos(theta) / scale, tf.sin(theta) / scale
    cx, cy = (w - 1) / 2, (h - 1) / 2
    # output (x, y) -> input: R(theta)/scale · diag(mirror, 1) · (p - c) + c + t
    a0, a1 = cos * mirror, -sin
    b0, b1 = sin * mirror, cos
    a2 = cx - a0 * cx - a1 * cy + tx
    b2 = cy - b0 * cx - b1 * cy + ty
    zeros = tf.zeros_like(a0)
    transforms = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=tf.shape(images)[1:3],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="REFLECT",
    )


def _identity_unless(chosen: tf.Tensor, value: tf.Tensor, identity: float) -> tf.Tensor:
    """Per-image parameters: `value` where the image was chosen, the identity elsewhere."""
    shape = tf.concat([tf.shape(chosen), tf.ones([tf.rank(value) - 1], tf.int32)], 0)
    return tf.where(tf.reshape(chosen, shape), value, identity)


def illumination_field(b: tf.Tensor, h: tf.Tensor, w: tf.Tensor, strength: float) -> tf.Tensor:
    """(B, H, W) multiplicative light field: off-centre vignetting times a linear gradient."""
    ys = tf.linspace(-1.0, 1.0, h)[None, :, None]
    xs = tf.linspace(-1.0, 1.0, w)[None, None, :]
    cx = _uniform(b, -0.3, 0.3)[:, None, None]
    cy = _uniform(b, -0.3, 0.3)[:, None, None]
    v = _uniform(b, 0.0, VIGNETTE * strength)[:, None, None]
    r2 = ((xs - cx) ** 2 + (ys - cy) ** 2) / 2.0
    angle = _uniform(b, -math.pi, math.pi)[:, None, None]
    g = _uniform(b, -GRADIENT, GRADIENT)[:, None, None] * strength
    return (1.0 - v * r2) * (1.0 + g * (tf.cos(angle) * xs + tf.sin(angle) * ys))


def colour(
    images: tf.Tensor,
    strength: float,
    light: float,
    *,
    p_stain: float = PROBABILITY["stain"],
    p_white: float = PROBABILITY["white"],
    p_light: float = PROBABILITY["illumination"],
    gamma_range: tuple[float, float] = GAMMA,
) -> tf.Tensor:
    """Stain, uneven illumination, white balance and gamma in ONE pass through optical density.

    OD = −log(I/255). The slide: OD·A + c with A = HED⁻¹·diag(stain gains)·HED (per-stain gain and bias in
    haematoxylin/eosin/DAB space). The lamp: + (−log field). The camera: − log(gain) per channel, clipped
    at OD 0 (saturation), × gamma. The device's prepare: the background (OD of 235) is moved back to 235.
    """
    b = tf.shape(images)[0]
    h, w = tf.shape(images)[1], tf.shape(images)[2]
    hed_from_rgb = tf.constant(HED_FROM_RGB, tf.float32)
    rgb_from_hed = tf.constant(RGB_FROM_HED, tf.float32)
    stain_on = tf.random.uniform([b]) < p_stain
    gain = _identity_unless(stain_on, 1.0 + _uniform(b, -STAIN_GAIN, STAIN_GAIN, (3,)) * strength, 1.0)
    bias = _identity_unless(stain_on, _uniform(b, -STAIN_BIAS, STAIN_BIAS, (3,)) * strength, 0.0)
    mix = tf.einsum("cd,bd,de->bce", hed_from_rgb, gain, rgb_from_hed)  # (B, 3, 3)
    offset = tf.einsum("bd,dc->bc", bias, rgb_from_hed)  # (B, 3)
    white_on = tf.random.uniform([b]) < p_white
    lo, hi = (math.log(g) * strength for g in WB_GAIN)
    log_gain = _identity_unless(white_on, _uniform(b, lo, hi, (3,)), 0.0)
    glo, ghi = (math.log(g) * strength for g in gamma_range)
    gamma = _identity_unless(white_on, tf.exp(_uniform(b, glo, ghi)), 1.0)[:, None, None, None]
    light_on = tf.random.uniform([b]) < p_light
    field = illumination_field(b, h, w, light)
    field = tf.where(light_on[:, None, None], field, 1.0)

    od = -tf.math.log(tf.maximum(images, 1.0) / 255.0)
    od = tf.einsum("bhwc,bce->bhwe", od, mix) + offset[:, None, None, :]
    od = od - tf.math.log(tf.maximum(field, 0.05))[..., None] - log_gain[:, None, None, :]
    od = gamma * tf.maximum(od, 0.0)
    od_white = -math.log(WHITE_LEVEL / 255.0)
    background = gamma * tf.maximum(od_white - log_gain, 0.0)[:, None, None, :]
    od = od - background + od_white
    return tf.clip_by_value(255.0 * tf.exp(-od), 0.0, 255.0)


def stain(images: tf.Tensor, strength: float) -> tf.Tensor:
    """Stain jitter alone (every image)."""
    return colour(images, strength, 0.0, p_stain=1.0, p_white=0.0, p_light=0.0)


def white_gamma(images: tf.Tensor, strength: float) -> tf.Tensor:
    """Camera white balance + gamma, then the background re-normalised (the device's prepare), alone.

    A per-channel map f moves the background from 235 to f(235); dividing by that is what background
    normalisation does, so only the residual (clipping and gamma's curvature) remains.
    """
    return colour(images, strength, 0.0, p_stain=0.0, p_white=1.0, p_light=0.0)


def illumination(images: tf.Tensor, strength: float) -> tf.Tensor:
    """Vignetting and an illumination gradient alone (every image)."""
    return colour(images, 0.0, strength, p_stain=0.0, p_white=0.0, p_light=1.0)


def defocus(images: tf.Tensor, strength: float, radius: int = 4) -> tf.Tensor:
    """Gaussian blur with a per-image σ (separable; the batch is folded into channels)."""
    b = tf.shape(images)[0]
    h, w = tf.shape(images)[1], tf.shape(images)[2]
    sigma = _uniform(b, BLUR_SIGMA[0], BLUR_SIGMA[0] + (BLUR_SIGMA[1] - BLUR_SIGMA[0]) * strength)
    t = tf.range(-radius, radius + 1, dtype=tf.float32)[None, :]
    k = tf.exp(-0.5 * (t / sigma[:, None]) ** 2)
    k = k / tf.reduce_sum(k, axis=1, keepdims=True)  # (B, 2r+1)
    k = tf.repeat(k, 3, axis=0)  # (B*3, 2r+1), channel order b0c0, b0c1, ...
    x = tf.reshape(tf.transpose(images, [1, 2, 0, 3]), [1, h, w, b * 3])
    kx = tf.transpose(k)[None, :, :, None]  # (1, 2r+1, B*3, 1)
    ky = tf.transpose(k)[:, None, :, None]  # (2r+1, 1, B*3, 1)
    pad = [[0, 0], [radius, radius], [radius, radius], [0, 0]]
    x = tf.pad(x, pad, mode="REFLECT")
    x = tf.nn.depthwise_conv2d(x, kx, [1, 1, 1, 1], "VALID")
    x = tf.nn.depthwise_conv2d(x, ky, [1, 1, 1, 1], "VALID")
    return tf.transpose(tf.reshape(x, [h, w, b, 3]), [2, 0, 1, 3])


def noise(images: tf.Tensor, strength: float) -> tf.Tensor:
    """Sensor noise: Gaussian read noise plus signal-dependent shot noise."""
    b = tf.shape(images)[0]
    read = _uniform(b, 0.0, NOISE_READ * strength)[:, None, None, None]
    shot = _uniform(b, 0.0, NOISE_SHOT * strength)[:, None, None, None]
    sd = tf.sqrt(read**2 + shot**2 * images)
    return tf.clip_by_value(images + sd * tf.random.normal(tf.shape(images)), 0.0, 255.0)


def jpeg(images: tf.Tensor) -> tf.Tensor:
    """Re-encode every image as JPEG at its own random quality."""
    quality = tf.random.uniform([tf.shape(images)[0]], JPEG_QUALITY[0], JPEG_QUALITY[1] + 1, tf.int32)

    def one(args):
        img, q = args
        x = tf.image.adjust_jpeg_quality(tf.cast(tf.round(img), tf.uint8), q)
        return tf.cast(x, tf.float32)

    return tf.map_fn(one, (images, quality), fn_output_signature=tf.float32)


def residual_cast(images: tf.Tensor, p: float) -> tf.Tensor:
    """A per-channel gain e^U(±RESIDUAL_LOG) on a random fraction `p` of the images, AFTER the background
    normalisation: the cast an imperfect white reference leaves (a model that learns to doubt colour casts,
    e.g. under outlier exposure, must not doubt this one)."""
    b = tf.shape(images)[0]
    gains = tf.exp(tf.random.uniform([b, 3], -RESIDUAL_LOG, RESIDUAL_LOG))
    gains = tf.where((tf.random.uniform([b]) < p)[:, None], gains, 1.0)
    return tf.clip_by_value(images * gains[:, None, None, :], 0.0, 255.0)


def on_subset(images: tf.Tensor, p: float, fn: Callable[[tf.Tensor], tf.Tensor]) -> tf.Tensor:
    """Apply `fn` to a random fraction `p` of the batch only (gather, transform, scatter back)."""
    chosen = tf.where(tf.random.uniform([tf.shape(images)[0]]) < p)[:, 0]

    def run() -> tf.Tensor:
        return tf.tensor_scatter_nd_update(images, chosen[:, None], fn(tf.gather(images, chosen)))

    return tf.cond(tf.size(chosen) > 0, run, lambda: images)


def robust_augmenter(
    strength: float = 1.0,
    colour_strength: float = 1.0,
    skip: Iterable[str] = (),
    gamma_max: float = GAMMA[1],
    white_residual: float = 0.0,
) -> Callable[[tf.Tensor], tf.Tensor]:
    """The station-to-station recipe (module docstring). `skip` names components to leave out (ablation).
    `white_residual`: the fraction of images given `residual_cast` (default none: the shipped recipe).
    `gamma_max`: the top of the gamma range (a model trained with outlier exposure needs a margin
    between the gammas it must call familiar, up to 1.3, and its far re-colourings)."""
    gamma_range = (GAMMA[0], gamma_max)
    skip = set(skip)
    unknown = skip - set(COMPONENTS)
    if unknown:
        raise ValueError(f"unknown augmentation component(s) {sorted(unknown)}; choose from {COMPONENTS}")
    cs = strength * colour_strength
    p = {k: (0.0 if k in skip else v) for k, v in PROBABILITY.items()}

    def augment(images: tf.Tensor) -> tf.Tensor:
        if "geometry" in skip or strength <= 0:
            images = _rot90_each(_flip_each(images), None)
        else:
            images = affine(images, strength)
        if max(p["stain"], p["white"], p["illumination"]) > 0 and strength > 0:
            images = colour(
                images,
                cs,
                strength,
                p_stain=p["stain"],
                p_white=p["white"],
                p_light=p["illumination"],
                gamma_range=gamma_range,
            )
        if white_residual > 0:
            images = residual_cast(images, white_residual)
        if p["defocus"] > 0 and strength > 0:
            images = on_subset(images, p["defocus"], lambda x: defocus(x, strength))
        if p["noise"] > 0 and strength > 0:
            images = on_subset(images, p["noise"], lambda x: noise(x, strength))
        if p["jpeg"] > 0 and strength > 0:
            images = on_subset(images, p["jpeg"], jpeg)
        return tf.ensure_shape(images, [None, None, None, 3])

    return augment


def _colour(images: tf.Tensor, strength: float, seed: int | None) -> tf.Tensor:
    """Per-image brightness/contrast/hue/saturation jitter on 0-255 floats (the basic recipe)."""

    def one(img: tf.Tensor) -> tf.Tensor:
        x = img / 255.0
        x = tf.image.random_brightness(x, 0.08 * strength, seed=seed)
        x = tf.image.random_contrast(x, 1 - 0.15 * strength, 1 + 0.15 * strength, seed=seed)
        x = tf.image.random_hue(x, 0.04 * strength, seed=seed)
        x = tf.image.random_saturation(x, 1 - 0.2 * strength, 1 + 0.2 * strength, seed=seed)
        return tf.clip_by_value(x, 0.0, 1.0) * 255.0

    return tf.map_fn(one, images, fn_output_signature=tf.float32)


def basic_augmenter(seed: int | None = None, strength: float = 1.0, colour: float = 1.0):
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


def make_augmenter(
    seed: int | None = None,
    strength: float = 1.0,
    colour: float = 1.0,
    *,
    recipe: str = "robust",
    skip: Iterable[str] = (),
    gamma_max: float = GAMMA[1],
    white_residual: float = 0.0,
) -> Callable[[tf.Tensor], tf.Tensor]:
    """Return fn(images) -> augmented images, for `dataset.map` after batching."""
    if recipe == "robust":
        return robust_augmenter(strength, colour, skip, gamma_max, white_residual)
    if recipe == "basic":
        return basic_augmenter(seed, strength, colour)
    raise ValueError(f"unknown augmentation recipe {recipe!r}; choose from {RECIPES}")
