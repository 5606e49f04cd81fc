"""Content-level "unfamiliar" detection (convert/content.py): statistics, the in-graph `ood_distance`
output, its naming in the manifest, and the device abstaining with the reason."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from make_tiny_bundle import LABELS, build_model, synth_smear  # noqa: E402

from convert import content  # noqa: E402
from convert.bundle import write_bundle  # noqa: E402
from convert.tflite import convert  # noqa: E402
from device.models.bundle import load_bundle  # noqa: E402
from device.models.ensemble import Ensemble  # noqa: E402
from device.models.model import TFLiteModel  # noqa: E402

SIZE = 32


def test_statistics_flag_points_far_from_every_class() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 5, (3, 16))
    y = np.arange(600) % 3
    feats = centres[y] + rng.normal(0, 1, (600, 16))
    stats = content.fit_statistics(feats, y, 3)
    near = content.distances(centres[[0, 1, 2]] + rng.normal(0, 1, (3, 16)), stats)
    far = content.distances(rng.normal(0, 5, (20, 16)) + 30, stats)
    assert near.max() < 3 and far.min() > 10 * near.max()
    # between two classes is unfamiliar too (no class mean is near)
    mid = content.distances(((centres[0] + centres[1]) / 2)[None], stats)
    assert mid[0] > 3 * np.median(content.distances(feats, stats))


def test_held_out_class_is_measured_per_class() -> None:
    rng = np.random.default_rng(1)
    centres = rng.normal(0, 6, (3, 8))
    y = np.arange(300) % 3
    feats = centres[y] + rng.normal(0, 1, (300, 8))
    yv = np.arange(60) % 3
    val = centres[yv] + rng.normal(0, 1, (60, 8))
    out = content.held_out_class(feats, y, 3, val, yv)
    assert set(out) == {"0", "1", "2"}
    assert all(v["held_out_flagged"] > 0.9 for v in out.values())  # well-separated classes: all flagged
    assert all(v["seen_val_flagged"] < 0.1 for v in out.values())


def _float_bundle(export, out: Path) -> Path:
    """The export model as a float32 bundle of the tiny model's labels and size."""
    conv = convert(export, "float32")
    write_bundle(
        out,
        conv.data,
        name="tiny",
        architecture="t",
        labels=list(LABELS),
        input_size=(SIZE, SIZE),
        input_dtype=conv.input_dtype,
        quantization="float32",
    )
    return out


@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(0)
    labels = np.arange(48) % 4
    images = np.stack([synth_smear(LABELS[i], rng, SIZE) for i in labels])
    # Untrained (random weights): the statistics and the graph do not care, and training costs minutes
    # on a loaded CPU. BatchNorm's moving statistics are set from the images so features vary.
    model = build_model(SIZE, len(LABELS), seed=1)
    from training.models import recalibrate_batchnorm

    recalibrate_batchnorm(model, images.astype(np.float32))
    return model, images, labels


@dataclasses.dataclass
class Scored:
    """Every score of the tiny model's images, fitted as `convert` fits them, and the one float32 bundle
    whose `ood_distance` output combines them all (a conversion costs most of this module's time, so the
    graph tests share it)."""

    pooled: np.ndarray
    mid: np.ndarray
    far: np.ndarray  # the images re-coloured far past any stain (convert/outliers.py)
    pooled_far: np.ndarray
    mid_far: np.ndarray
    stats: dict
    mid_stats: dict
    head: dict
    export: object  # keras.Model: [probabilities, cam, ood_distance]
    bundle: Path

    def want(self, far: bool = False) -> np.ndarray:
        """The combined score in numpy (pooled, stride-16 and stain-outlier parts)."""
        pooled, mid = (self.pooled_far, self.mid_far) if far else (self.pooled, self.mid)
        return content.combined_distances(pooled, [mid], self.stats, [self.mid_stats], self.head)


@pytest.fixture(scope="module")
def scored(tiny, tmp_path_factory) -> Scored:
    from convert import outliers

    model, images, labels = tiny
    rng = np.random.default_rng(3)
    far = np.stack([outliers.far_stain(im, rng) for im in images])
    assert not np.array_equal(far, images)
    layer = content.mid_layer(model)
    both = content.feature_model(model, [layer])
    pooled, mid = both.predict(images.astype(np.float32), verbose=0)
    pooled_far, mid_far = both.predict(far.astype(np.float32), verbose=0)
    stats = content.fit_statistics(pooled, labels, len(LABELS))
    mid_stats = content.fit_statistics(mid, labels, len(LABELS))
    stats["scale"] = float(np.quantile(content.distances(pooled, stats), 0.99))
    mid_stats.update(layer=layer, scale=float(np.quantile(content.distances(mid, mid_stats), 0.99)))
    head = outliers.fit(pooled, pooled_far, pooled)
    export = content.add_outputs(model, stats, mid_stats=[mid_stats], outlier=head)
    bundle = _float_bundle(export, tmp_path_factory.mktemp("content") / "b")
    return Scored(pooled, mid, far, pooled_far, mid_far, stats, mid_stats, head, export, bundle)


@pytest.mark.slow
def test_distance_output_matches_keras_and_the_device_abstains(tiny, scored: Scored, tmp_path: Path) -> None:
    model, images, labels = tiny
    x = images.astype(np.float32)
    # the plain distance head (pooled features only), in Keras
    feats = content.embedding_model(model).predict(x, verbose=0)
    plain = content.add_outputs(model, content.fit_statistics(feats, labels, len(LABELS)))
    probs, cam, dist = plain.predict(x, verbose=0)
    np.testing.assert_allclose(probs, model.predict(x, verbose=0), atol=1e-6)
    assert cam.ndim == 4 and dist.shape == (len(x), 1)
    np.testing.assert_allclose(dist[:, 0], content.distances(feats, scored.stats), rtol=1e-3, atol=1e-3)

    # the converted bundle: outputs named in the manifest, read by the device as Keras computes them
    out = tmp_path / "b"
    shutil.copytree(scored.bundle, out)
    manifest = json.loads((out / "manifest.json").read_text())
    names = [o["name"] for o in manifest["outputs"]]
    assert names == ["probabilities", "cam", "ood_distance"]
    assert all(o["tensor_name"] for o in manifest["outputs"])
    m = TFLiteModel(load_bundle(out))
    assert m.has_distance and m.has_cam
    raw = m.predict(images[0])
    np.testing.assert_allclose(raw.probabilities, probs[0], atol=2e-3)
    assert raw.ood_distance == pytest.approx(float(scored.want()[0]), rel=1e-2, abs=1e-2)

    # threshold between the training images and a texture: the texture is refused with the reason
    noise = np.random.default_rng(5).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    d_noise = m.predict(noise).ood_distance
    limit = float(scored.want().max())
    assert d_noise > limit
    man = load_bundle(out).manifest
    man.calibration = {"content_check": {"score": content.SCORE, "threshold": limit}}
    from device.models.bundle import write_manifest

    write_manifest(out, man)
    ens = Ensemble([TFLiteModel(load_bundle(out))], threshold=0.0)
    pred = ens.classify(noise, with_cam=False)
    assert pred.abstained and "content unlike the training cells" in pred.reason
    assert not ens.classify(images[0], with_cam=False).abstained
    # what the field classifier compares renderings of one frame by: checks firing, then distances
    fired, ratio = ens.unfamiliarity([noise, images[0]])
    d_image = m.predict(images[0]).ood_distance
    assert fired == 1 and ratio == pytest.approx((d_noise + d_image) / limit, rel=1e-3)
    assert ens.unfamiliarity([images[0]]) < ens.unfamiliarity([noise])
    off = Ensemble([TFLiteModel(load_bundle(out))], threshold=0.0, content_check=False)
    assert not off.classify(noise, with_cam=False).abstained


@pytest.mark.slow
def test_probability_output_is_found_by_name_not_shape(scored: Scored, tmp_path: Path) -> None:
    """A manifest that names the tensors wins over shapes: swapping the names is caught."""
    out = tmp_path / "b"
    shutil.copytree(scored.bundle, out)
    man = load_bundle(out).manifest
    prob, cam, dist = man.outputs
    assert (prob.name, cam.name, dist.name) == ("probabilities", "cam", "ood_distance")
    man.outputs = [
        dataclasses.replace(prob, tensor_name=dist.tensor_name),
        cam,
        dataclasses.replace(dist, tensor_name=prob.tensor_name),
    ]
    from device.errors import BundleError
    from device.models.bundle import write_manifest

    write_manifest(out, man)
    with pytest.raises(BundleError, match="model outputs 1 classes, the manifest lists 4 labels"):
        TFLiteModel(load_bundle(out))


@pytest.mark.slow
def test_combined_score_with_earlier_features_matches_numpy_and_tflite(tiny, scored: Scored) -> None:
    """The second score (stride-16 features) is max-combined in the graph: Keras, TFLite and the numpy
    reference agree, and one output named ood_distance still carries it."""
    model, images, labels = tiny
    x = images.astype(np.float32)
    layer = scored.mid_stats["layer"]
    assert model.get_layer("backbone").get_layer(layer).output.shape[1] == SIZE // content.MID_STRIDE
    assert scored.mid.ndim == 2 and scored.mid.shape[0] == len(x)
    stats, mid_stats = scored.stats, scored.mid_stats
    want = content.combined_distances(scored.pooled, [scored.mid], stats, [mid_stats])
    # each part decides somewhere: the max really combines two different scores
    d_pool = content.distances(scored.pooled, stats) / stats["scale"]
    assert not np.allclose(want, d_pool)

    export = content.add_outputs(model, stats, cam=False, mid_stats=[mid_stats])
    probs, dist = export.predict(x, verbose=0)
    np.testing.assert_allclose(probs, model.predict(x, verbose=0), atol=1e-6)
    np.testing.assert_allclose(dist[:, 0], want, rtol=1e-3, atol=1e-3)

    # the bundle's one ood_distance output carries the max of every part
    assert [o.name for o in load_bundle(scored.bundle).manifest.outputs] == [
        "probabilities",
        "cam",
        "ood_distance",
    ]
    m = TFLiteModel(load_bundle(scored.bundle))
    assert m.predict(images[3]).ood_distance == pytest.approx(float(scored.want()[3]), rel=1e-2, abs=1e-2)


@pytest.mark.slow
def test_stain_outlier_score_joins_the_max_in_keras_numpy_and_tflite(scored: Scored) -> None:
    """convert/outliers.py: the logistic head fitted on familiar vs far re-coloured images' pooled
    features flags the re-coloured ones, and the graph (Keras, TFLite) computes what numpy does."""
    from convert import outliers

    head = scored.head
    s_clean, s_far = outliers.scores(scored.pooled, head), outliers.scores(scored.pooled_far, head)
    # the step sits above every clean image's logit: none of them reaches half its height
    assert (s_clean > outliers.CAP / 2).sum() == 0
    assert s_far.max() <= outliers.CAP
    assert np.median(s_far) > np.median(s_clean)  # fitted on them: re-coloured images score higher

    want = scored.want(far=True)
    assert np.all(want >= s_far - 1e-9)
    probs, _cam, dist = scored.export.predict(scored.far.astype(np.float32), verbose=0)
    np.testing.assert_allclose(dist[:, 0], want, rtol=1e-3, atol=1e-3)

    m = TFLiteModel(load_bundle(scored.bundle))
    assert m.predict(scored.far[5]).ood_distance == pytest.approx(float(want[5]), rel=1e-2, abs=1e-2)


def test_far_stain_families_move_the_stain_far_and_leave_white_white() -> None:
    from convert import outliers

    rng = np.random.default_rng(0)
    img = np.full((16, 16, 3), 255, np.uint8)
    img[4:12, 4:12] = (120, 60, 160)  # a nucleus on white
    for name, fam in outliers.FAMILIES.items():
        out = fam(img, rng)
        assert out[0, 0].tolist() == [255, 255, 255], name  # zero density stays zero
        od_in = -np.log(img[8, 8].astype(float) / 255)
        od_out = -np.log(np.maximum(out[8, 8].astype(float), 1) / 255)
        ratio = od_out / od_in
        assert np.any((ratio < 0.6) | (ratio > 1.6)), (name, ratio)


def test_content_threshold_is_not_fitted_on_the_outlier_step_plateau() -> None:
    """Validation images the stain-outlier step fired on would put the 99% quantile on its plateau, and a
    threshold above the plateau means the step can never fire: they are left out of the fit, counted."""
    from convert.calibrate import fit_content_check

    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.uniform(0.2, 2.0, 255), [8.0] * 4])  # 4 of 259 on the plateau
    plain = fit_content_check(scores)
    assert plain["threshold"] > 8.0  # the failure this guards against
    fitted = fit_content_check(scores, outlier_step=8.0)
    assert fitted["threshold"] < 2.5
    assert fitted["val_step_fired"] == pytest.approx(4 / 259)
    assert fitted["val_flagged"] >= 4 / 259


def test_a_step_swamped_by_quantisation_noise_refuses_the_bundle() -> None:
    from convert.pipeline import MAX_STEP_FIRED, _check_outlier_step
    from device.errors import SmearscopeError

    _check_outlier_step({"val_step_fired": MAX_STEP_FIRED / 2})
    _check_outlier_step({})  # no step: nothing to check
    with pytest.raises(SmearscopeError, match="stain-outlier step fires on 51"):
        _check_outlier_step({"val_step_fired": 0.51})
