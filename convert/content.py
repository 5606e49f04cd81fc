"""Content-level "unfamiliar" detection: class-conditional Mahalanobis distance on the pooled embedding.

Lee et al. ("A simple unified framework for detecting out-of-distribution samples", NeurIPS 2018):
fit one mean per class and ONE shared covariance of the global-average-pooled backbone features of the
training images; an input's score is its squared Mahalanobis distance to the NEAREST class mean.
Inputs unlike every class the model was taught (another cell type, a field with no white cell, a texture,
a cell at the wrong scale) land far from all class means even when the softmax is confident.

The covariance is the Ledoit-Wolf shrinkage estimate (D = 1280 features from ~1 800 images: the sample
covariance is badly conditioned). Its whitening matrix A (A·Σ·Aᵀ = I) and the whitened class means are
baked INTO the TFLite graph (`add_outputs`): the model gets a third output `ood_distance` (1, 1) =
min_k ||A(z − μ_k)||² / D, so the device does no linear algebra and the statistics travel inside the
hashed (and signed) model file. The threshold lives in the manifest (`calibration.content_check`), fitted
on the device's own int8 outputs for the validation split.

Further scores on EARLIER features (`mid_layer`: the backbone's last stride-16 or stride-8 map, globally
averaged; `block_13_expand_relu`, 576-d, and `block_6_expand_relu`, 192-d, in MobileNetV2) catch what
the pooled embedding is taught to see through: the robust training makes the last layers indifferent to
stain and texture, so a smear re-coloured far outside any stain, a field without white cells or a
greyscale picture can sit close to a class mean there. Their statistics are fitted on the training
images AND one robust-augmented copy of each (what the models are trained to handle is familiar, so mild
camera shifts stay below the threshold; benchmarks/content_layers.py measured the trade-off per layer).
The output is then one score, max(d_pool / q_pool, d_mid / q_mid, ...), each distance over its 99%
quantile on the clean validation split, so one threshold in the manifest still decides, and the device
is unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
from sklearn.covariance import LedoitWolf

from convert.cam import BACKBONE, CLASSIFIER, _find

POOL = "pool"
SCORE = "mahalanobis_min"
#: The earlier features' default stride (input side / map side) for the extra score.
MID_STRIDE = 16


def fit_statistics(features: np.ndarray, y: np.ndarray, k: int) -> dict:
    """Class means and the shrunk shared covariance's whitening matrix from (N, D) features."""
    features = np.asarray(features, np.float64)
    means = np.stack([features[y == c].mean(axis=0) for c in range(k)])
    centred = features - means[y]
    lw = LedoitWolf(assume_centered=True).fit(centred)
    cov = lw.covariance_
    vals, vecs = np.linalg.eigh(cov)
    vals = np.maximum(vals, vals.max() * 1e-6)
    whiten = (vecs / np.sqrt(vals)).T  # (D, D): rows = eigenvectors scaled by 1/sqrt(eigenvalue)
    return {"means": means, "whiten": whiten, "shrinkage": float(lw.shrinkage_)}


def distances(features: np.ndarray, stats: dict) -> np.ndarray:
    """The score `add_outputs` computes in the graph, in float64 numpy: (N,) min_k ||A(z-μ_k)||² / D."""
    w = np.asarray(features, np.float64) @ stats["whiten"].T
    m = stats["means"] @ stats["whiten"].T
    d2 = ((w[:, None, :] - m[None, :, :]) ** 2).sum(-1)
    return d2.min(axis=1) / w.shape[1]


class MinSquaredDistance(keras.layers.Layer):
    """(B, D) whitened embedding -> (B, 1) min over class centres of the squared distance / D."""

    def __init__(self, centres: np.ndarray, **kw) -> None:
        super().__init__(**kw)
        self._centres = np.asarray(centres, np.float32)

    def build(self, input_shape) -> None:
        self.centres = self.add_weight(
            shape=self._centres.shape, initializer="zeros", trainable=False, name="centres"
        )
        self.centres.assign(self._centres)

    def call(self, w):
        diff = keras.ops.expand_dims(w, 1) - keras.ops.expand_dims(self.centres, 0)  # (B, K, D)
        d2 = keras.ops.mean(keras.ops.square(diff), axis=-1)  # (B, K)
        return keras.ops.min(d2, axis=-1, keepdims=True)


def mid_layer(model: keras.Model, stride: int = MID_STRIDE) -> str:
    """Name of the backbone's last layer whose map is the input side / `stride`."""
    backbone = _find(model, BACKBONE)
    side = int(model.input_shape[1]) // stride
    names = [
        layer.name
        for layer in backbone.layers
        if len(layer.output.shape) == 4 and layer.output.shape[1] == side and layer.output.shape[2] == side
    ]
    if not names:
        raise ValueError(f"the backbone has no {side}x{side} (stride {stride}) feature map")
    return names[-1]


def _chain(model: keras.Model, inp, mids: Sequence[str] = ()):
    """Re-apply the trained chain (image -> backbone -> pool -> dropout -> classifier) to `inp`;
    returns (probabilities, backbone map, pooled features, [the `mids` backbone maps])."""
    x, fmap, pooled, mid_maps = inp, None, None, []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if layer.name == BACKBONE and mids:
            outs = [layer.get_layer(m).output for m in mids] + [layer.output]
            *mid_maps, x = keras.Model(layer.input, outs, name="backbone_mid")(x)
        else:
            x = layer(x)
        if layer.name == BACKBONE:
            fmap = x
        elif layer.name == POOL:
            pooled = x
    return x, fmap, pooled, list(mid_maps)


def _distance_head(features, stats: dict, name: str):
    whiten = np.asarray(stats["whiten"], np.float32)
    dense = keras.layers.Dense(whiten.shape[0], use_bias=False, name=f"{name}_whiten")
    w = dense(features)
    dense.set_weights([whiten.T])
    centres = np.asarray(stats["means"], np.float64) @ np.asarray(stats["whiten"], np.float64).T
    return MinSquaredDistance(centres, name=name)(w)


def _outlier_head(features, head: dict):
    """The stain-outlier score (convert/outliers.py): CAP · sigmoid(STEEP · (z·w + b − L)), the step
    folded into one Dense(1, sigmoid) and a Rescaling."""
    from convert.outliers import CAP, STEEP

    w = np.asarray(head["weights"], np.float64).reshape(-1, 1) * STEEP
    bias = STEEP * (float(head["bias"]) - float(head["operating_logit"]))
    dense = keras.layers.Dense(1, activation="sigmoid", name="outlier_step")
    p = dense(features)
    dense.set_weights([w.astype(np.float32), np.array([bias], np.float32)])
    return keras.layers.Rescaling(CAP, name="outlier_score")(p)


def add_outputs(
    model: keras.Model,
    stats: dict | None = None,
    *,
    cam: bool = True,
    mid_stats: Sequence[dict] = (),
    outlier: dict | None = None,
) -> keras.Model:
    """The export model: outputs `[probabilities (1, K), cam (1, h, w, K)?, ood_distance (1, 1)?]`.

    Layers of the trained chain (image -> backbone -> pool -> dropout -> classifier) are re-applied to a
    fresh input; the backbone's map feeds the CAM (convert/cam.py) and the pooled features the distance.
    With `mid_stats` (one per earlier layer, each with its "layer"; all and `stats` with a "scale") the
    distance is the max of the normalised scores (module docstring); `outlier` (convert/outliers.py,
    needs `stats["scale"]`) adds the stain-outlier score to that max.
    """
    _find(model, BACKBONE)
    _find(model, POOL)
    classifier = _find(model, CLASSIFIER)
    kernel, bias = classifier.get_weights()
    inp = keras.Input(shape=model.input_shape[1:], dtype="float32", name="image")
    mids = [m["layer"] for m in mid_stats] if stats is not None else []
    x, fmap, pooled, mid_maps = _chain(model, inp, mids)
    outputs = [x]
    if cam:
        channels, k = kernel.shape
        conv = keras.layers.Conv2D(k, 1, name="cam")
        outputs.append(conv(fmap))
        conv.set_weights([kernel.reshape(1, 1, channels, k).astype(np.float32), bias.astype(np.float32)])
    if stats is not None and not mids and outlier is None:
        outputs.append(_distance_head(pooled, stats, "ood_distance"))
    elif stats is not None:
        scores = [
            keras.layers.Rescaling(1.0 / float(stats["scale"]), name="pool_score")(
                _distance_head(pooled, stats, "pool_distance")
            )
        ]
        for i, (m, st) in enumerate(zip(mid_maps, mid_stats, strict=True)):
            feats = keras.layers.GlobalAveragePooling2D(name=f"mid{i}_pool")(m)
            scores.append(
                keras.layers.Rescaling(1.0 / float(st["scale"]), name=f"mid{i}_score")(
                    _distance_head(feats, st, f"mid{i}_distance")
                )
            )
        if outlier is not None:
            scores.append(_outlier_head(pooled, outlier))
        outputs.append(keras.layers.Maximum(name="ood_distance")(scores))
    return keras.Model(inp, outputs, name=f"{model.name}_export")


def embedding_model(model: keras.Model) -> keras.Model:
    """image -> pooled features (the embedding the statistics are fitted on)."""
    return keras.Model(model.input, _find(model, POOL).output, name="embedding")


def feature_model(model: keras.Model, mids: Sequence[str]) -> keras.Model:
    """image -> [pooled features, *each of the `mids` maps globally averaged] (every score's features)."""
    inp = keras.Input(shape=model.input_shape[1:], dtype="float32", name="image")
    _, _, pooled, maps = _chain(model, inp, mids)
    pooled_maps = [keras.layers.GlobalAveragePooling2D()(m) for m in maps]
    return keras.Model(inp, [pooled, *pooled_maps], name="features")


def combined_distances(
    pooled: np.ndarray,
    mids: Sequence[np.ndarray],
    stats: dict,
    mid_stats: Sequence[dict],
    outlier: dict | None = None,
) -> np.ndarray:
    """The combined score `add_outputs` computes, in numpy."""
    score = distances(pooled, stats) / float(stats["scale"])
    for f, st in zip(mids, mid_stats, strict=True):
        score = np.maximum(score, distances(f, st) / float(st["scale"]))
    if outlier is not None:
        from convert.outliers import scores

        score = np.maximum(score, scores(pooled, outlier))
    return score


def choose_threshold(val_scores: np.ndarray, quantile: float = 0.99, margin: float = 1.1) -> float:
    """`margin` × the `quantile` quantile of the validation images' scores (device-computed)."""
    return float(np.quantile(np.asarray(val_scores, np.float64), quantile) * margin)


def held_out_class(
    features: np.ndarray,
    y: np.ndarray,
    k: int,
    val: np.ndarray,
    y_val: np.ndarray,
    quantile: float = 0.99,
    margin: float = 1.1,
) -> dict:
    """For each class c: fit the statistics on the training features WITHOUT c, the threshold on the
    validation images of the other classes, and report how often the training images OF c (never in
    the statistics) are flagged. The backbone itself still saw c while it was trained, so this is an
    optimistic stand-in for a truly unseen cell type (no such labelled images exist here)."""
    out = {}
    for c in range(k):
        keep = y != c
        remap = {old: new for new, old in enumerate(sorted(set(range(k)) - {c}))}
        stats = fit_statistics(features[keep], np.array([remap[v] for v in y[keep]]), k - 1)
        seen = distances(val[y_val != c], stats)
        thr = choose_threshold(seen, quantile, margin)
        unseen = distances(features[y == c], stats)
        out[str(c)] = {
            "threshold": thr,
            "seen_val_flagged": float((seen > thr).mean()),
            "held_out_flagged": float((unseen > thr).mean()),
            "n_held_out": int(len(unseen)),
        }
    return out
