"""The one function that builds a classifier (Keras' way: preprocessing travels inside the model).

Structure the converter relies on::

    image (float32 raw RGB 0-255, H x W x 3)
      -> backbone   nested keras Model named "backbone": scales 0-255 itself, returns the last feature map
      -> pool       GlobalAveragePooling2D
      -> dropout    Dropout
      -> classifier Dense(K, softmax)

Only standard layers, so `model.keras` loads with plain `keras.models.load_model`.
"""

from __future__ import annotations

from pathlib import Path

import keras

from device.errors import SmearscopeError
from training.backbones import BACKBONES, DEFAULT_WEIGHT_FILES

__all__ = [
    "BACKBONES",
    "build_model",
    "feature_extractor",
    "set_finetune",
    "recalibrate_batchnorm",
    "is_scratch",
]


def is_scratch(weights: str | None) -> bool:
    """True when the backbone starts from random weights (`--weights none`)."""
    return weights in (None, "", "none", "None")


def _resolve_weights(weights: str | None) -> str | None:
    if is_scratch(weights):
        return None
    if weights == "imagenet":
        return "imagenet"
    path = Path(weights)
    if not path.is_file():
        raise SmearscopeError(f"--weights {weights}: no such file (give a path, 'imagenet' or 'none')")
    return str(path)


def build_backbone(name: str, size: int, *, alpha: float = 1.0, weights: str | None = None) -> keras.Model:
    """A Model named "backbone": raw 0-255 RGB (size, size, 3) -> last feature map."""
    weights = _resolve_weights(weights)
    shape = (size, size, 3)
    if name == "mobilenetv2":
        inp = keras.Input(shape, name="backbone_input")
        x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="scale")(inp)
        # input_tensor makes the applications model share our graph: one flat Model, so
        # "fine-tune the top N layers" counts real layers.
        net = keras.applications.MobileNetV2(
            input_tensor=x, alpha=alpha, include_top=False, weights=weights, input_shape=shape
        )
        return keras.Model(inp, net.output, name="backbone")
    if name == "efficientnet-lite0":
        if weights is None:
            raise SmearscopeError(
                "efficientnet-lite0 is built from its .keras file: give --weights PATH "
                f"(e.g. ../shared/pretrained/{DEFAULT_WEIGHT_FILES['efficientnet-lite0']})"
            )
        if weights == "imagenet":
            raise SmearscopeError(
                "efficientnet-lite0 has no download; give --weights PATH to its .keras file"
            )
        net = keras.models.load_model(weights, compile=False)
        if tuple(net.input_shape[1:]) != shape:
            net = _resized(net, shape, weights)
        return _renamed(net, "backbone")
    if name in ("efficientnetb0", "efficientnetb3"):
        cls = (
            keras.applications.EfficientNetB0
            if name == "efficientnetb0"
            else keras.applications.EfficientNetB3
        )
        net = cls(include_top=False, weights=weights, input_shape=shape, include_preprocessing=True)
        return _renamed(net, "backbone")
    raise SmearscopeError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")


def _resized(net: keras.Model, shape: tuple[int, int, int], source: str) -> keras.Model:
    """The same fully convolutional network (same weights) taking another input size."""
    cfg = net.get_config()
    inputs = [layer for layer in cfg["layers"] if layer["class_name"] == "InputLayer"]
    if len(inputs) != 1 or net.input_shape[-1] != shape[-1]:
        raise SmearscopeError(f"{source}: cannot rebuild for input {shape} (input {net.input_shape[1:]})")
    inputs[0]["config"]["batch_shape"] = (None, *shape)
    try:
        resized = keras.Model.from_config(cfg)
        resized.set_weights(net.get_weights())
    except (ValueError, TypeError) as exc:
        raise SmearscopeError(f"{source}: cannot rebuild for input {shape}: {exc}") from exc
    return resized


def _renamed(model: keras.Model, name: str) -> keras.Model:
    """Rebuild a functional model under another name (the weights are shared, not copied)."""
    return keras.Model(model.input, model.output, name=name)


def build_model(
    backbone: str,
    num_classes: int,
    *,
    size: int = 224,
    alpha: float = 1.0,
    weights: str | None = None,
    dropout: float = 0.2,
) -> keras.Model:
    """image (0-255 float32) -> backbone -> pool -> dropout -> classifier (softmax).

    A pretrained backbone starts frozen, its BatchNorm pinned to inference mode. Without weights
    (`weights="none"`) the whole network is trainable and BatchNorm learns batch statistics: a random
    backbone has nothing to keep frozen (see `is_scratch`).
    """
    scratch = is_scratch(weights)
    base = build_backbone(backbone, size, alpha=alpha, weights=weights)
    base.trainable = scratch
    inp = keras.Input((size, size, 3), name="image", dtype="float32")
    # training=False keeps BatchNorm in inference mode even when layers are unfrozen for fine-tuning;
    # from scratch, BatchNorm follows the phase (training in fit, inference in predict).
    x = base(inp) if scratch else base(inp, training=False)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    out = keras.layers.Dense(num_classes, activation="softmax", name="classifier", dtype="float32")(x)
    return keras.Model(inp, out, name=f"{backbone}-classifier")


def feature_extractor(model: keras.Model) -> keras.Model:
    """image -> pooled backbone features (what the head and the sklearn baselines see)."""
    return keras.Model(model.input, model.get_layer("pool").output, name="features")


def set_finetune(model: keras.Model, layers: int) -> int:
    """Unfreeze the top `layers` layers of the backbone (BatchNorm stays frozen). Returns #unfrozen."""
    base = model.get_layer("backbone")
    base.trainable = True
    cut = max(0, len(base.layers) - layers)
    unfrozen = 0
    for i, layer in enumerate(base.layers):
        trainable = i >= cut and not isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = trainable
        unfrozen += bool(trainable and layer.weights)
    return unfrozen


def recalibrate_batchnorm(model: keras.Model, images) -> None:
    """Set the backbone's BatchNorm moving statistics from one batch of images.

    A randomly initialised backbone (`--weights none`) has moving mean 0 / variance 1, so in inference
    mode its features collapse towards zero and neither the cached-feature head nor a BN-frozen
    fine-tune can learn. Pretrained backbones keep their statistics.
    """
    base = model.get_layer("backbone")
    bns = [layer for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization)]
    saved = [layer.momentum for layer in bns]
    for layer in bns:
        layer.momentum = 0.0
    base(images, training=True)
    for layer, momentum in zip(bns, saved, strict=True):
        layer.momentum = momentum
