"""A second model output for class-activation heatmaps without gradients.

The trained model is `image -> backbone (feature map) -> pool (GAP) -> dropout -> classifier (Dense)`.
Because global average pooling is linear, the classifier applied at every location of the feature map
(a 1x1 convolution with the Dense kernel and bias) gives per-location class logits whose spatial mean
is exactly the model's logits. That map is the CAM (Zhou et al., 2016); the device only has to pick a
class channel and normalise it.
"""

from __future__ import annotations

import keras
import numpy as np

BACKBONE = "backbone"
CLASSIFIER = "classifier"


def _find(model: keras.Model, name: str) -> keras.layers.Layer:
    try:
        return model.get_layer(name)
    except ValueError as exc:
        names = ", ".join(layer.name for layer in model.layers)
        raise ValueError(
            f"the trained model has no layer named {name!r} (layers: {names}); expected "
            "image -> backbone -> pool -> dropout -> classifier"
        ) from exc


def add_cam_output(model: keras.Model) -> keras.Model:
    """Return a model with outputs `[probabilities (1, K), cam (1, h, w, K)]` sharing the weights.

    The outer model must be a linear chain (as training/models.py builds it); its layers are
    re-applied in order to a fresh input, and the backbone's output is tapped for the CAM.
    """
    _find(model, BACKBONE)
    classifier = _find(model, CLASSIFIER)
    kernel, bias = classifier.get_weights()
    inp = keras.Input(shape=model.input_shape[1:], dtype="float32", name="image")
    x = inp
    features = None
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        x = layer(x)
        if layer.name == BACKBONE:
            features = x
    if features is None or len(features.shape) != 4:
        raise ValueError("the backbone does not output a (h, w, C) feature map; cannot build a CAM")
    channels, k = kernel.shape
    if features.shape[-1] != channels:
        raise ValueError(f"backbone gives {features.shape[-1]} channels, the classifier expects {channels}")
    conv = keras.layers.Conv2D(k, 1, name="cam")
    cam = conv(features)
    conv.set_weights([kernel.reshape(1, 1, channels, k).astype(np.float32), bias.astype(np.float32)])
    return keras.Model(inp, [x, cam], name=f"{model.name}_with_cam")
