"""Keras -> TFLite: float32, float16, dynamic-range and full-integer int8 (uint8 input and outputs).

The shipped models take raw RGB 0-255, so a full-int8 model with uint8 input normally gets input
scale 1.0 and zero point 0: the device feeds camera bytes as they are. `convert` checks that and
reports it; device.models.model.TFLiteModel also handles any other input quantisation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from device.models.runtime import interpreter_class
from device.preprocess import load_for_model, prepare, read_image

log = logging.getLogger(__name__)

QUANTIZATIONS = ("int8", "float16", "dynamic", "float32")


@dataclass
class Converted:
    data: bytes  # the .tflite flatbuffer
    quantization: str
    input_dtype: str  # "uint8" or "float32"
    input_quantization: tuple[float, int]  # (scale, zero point); (0.0, 0) for float inputs


#: Kinds of `convert.ood.probes` made from training images that extend the representative data (below).
UNFAMILIAR_KINDS = ("grayscale", "heavy_blur", "no_white_cells")


def representative_images(
    paths: Sequence[str | Path],
    size: tuple[int, int],
    resize: str = "center_crop",
    *,
    limit: int = 200,
    seed: int = 0,
    white_reference: str | None = None,
    unfamiliar: int = 0,
) -> Callable[[], Iterator[list[np.ndarray]]]:
    """A representative-dataset generator over (a seeded sample of) training images, prepared with the
    device's own preprocessing, as float32 raw 0-255 batches of one.

    `unfamiliar` more images are training images made unfamiliar (`UNFAMILIAR_KINDS` of convert/ood.py:
    greyscale, blurred, without white cells). Int8 calibration takes each tensor's range
    from what it sees: with familiar images only, the content check's distance output can saturate BELOW
    its own threshold (a check that can never fire). These keep the smears' own colours and textures,
    so the backbone's ranges hardly move (re-coloured kinds, hue-rotated or channel-swapped, widen them
    enough to cost test accuracy)."""
    paths = list(paths)
    if not paths:
        raise ValueError("int8 conversion needs representative images (the training split is empty)")
    rng = np.random.default_rng(seed)
    chosen = [paths[i] for i in rng.permutation(len(paths))[:limit]]

    def gen() -> Iterator[list[np.ndarray]]:
        for p in chosen:
            yield [load_for_model(p, size, resize, white_reference=white_reference).astype(np.float32)[None]]
        if unfamiliar > 0:
            from convert.ood import probes

            per_kind = max(1, -(-unfamiliar // len(UNFAMILIAR_KINDS)))
            smears = [read_image(p) for p in chosen[:per_kind]]
            for kind, img in probes(smears, n=per_kind, seed=seed):
                if kind in UNFAMILIAR_KINDS:
                    x = prepare(img, size, resize, white_reference=white_reference)
                    yield [x.astype(np.float32)[None]]

    return gen


def convert(
    model: tf.keras.Model,
    quantization: str,
    representative: Callable[[], Iterable[list[np.ndarray]]] | None = None,
) -> Converted:
    """Convert a Keras model (float32 input, raw 0-255) to a TFLite flatbuffer."""
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"unknown quantization {quantization!r}; expected one of {QUANTIZATIONS}")
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantization == "float16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif quantization == "dynamic":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantization == "int8":
        if representative is None:
            raise ValueError("int8 conversion needs a representative dataset")
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.uint8
        conv.inference_output_type = tf.uint8
    data = conv.convert()
    interpreter, _ = interpreter_class()  # the device's runtime (LiteRT), not the deprecated tf.lite one
    det = interpreter(model_content=data).get_input_details()[0]
    in_dtype = np.dtype(det["dtype"]).name
    scale, zero = det["quantization"]
    if in_dtype == "uint8" and (abs(scale - 1.0) > 1e-6 or zero != 0):
        log.warning(
            "int8 input came out with scale %s and zero point %s (not 1/0): the device will requantise "
            "raw pixels, costing a little speed",
            scale,
            zero,
        )
    return Converted(data, quantization, in_dtype, (float(scale), int(zero)))
