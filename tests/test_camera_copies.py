"""convert/cameras.py: training images through other cameras' white balance, as the device prepares
them, on the familiar side of the content statistics (`convert --camera-copies`)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from convert import cameras
from device.preprocess import prepare


def _smear(rng: np.random.Generator, size: int = 64, blue_bg: float = 249.0) -> np.ndarray:
    """A bright background (blue near clipping, as the B-ALL images) with darker violet cells."""
    img = np.empty((size, size, 3), np.float32)
    img[:] = (244.0, 255.0, blue_bg)
    for _ in range(6):
        c = rng.integers(8, size - 8, 2)
        cv2.circle(img, (int(c[0]), int(c[1])), int(rng.integers(4, 8)), (150.0, 110.0, 200.0), -1)
    return np.clip(img + rng.normal(0, 2, img.shape), 0, 255).astype(np.uint8)


def test_gains_cover_the_range_with_half_the_draws_at_its_edges() -> None:
    rng = np.random.default_rng(0)
    g = np.stack([cameras.draw_gains(rng) for _ in range(4000)])
    lo, hi = cameras.GAIN_RANGE
    assert np.all(g[:, 1] == 1.0)
    assert g[:, [0, 2]].min() >= lo - 1e-9 and g[:, [0, 2]].max() <= hi + 1e-9
    edge = np.abs(np.log(g[:, [0, 2]]) - np.log(lo)) <= cameras.EDGE_WIDTH
    edge |= np.abs(np.log(g[:, [0, 2]]) - np.log(hi)) <= cameras.EDGE_WIDTH
    # half drawn at an edge, plus the uniform draws that land there (2 x 0.04 of 0.446 log units)
    assert 0.5 < edge.mean() < 0.66
    # both clipping gains at once (the corner the content check refused) is common, not ~1%
    both_high = (g[:, 0] > 1.2) & (g[:, 2] > 1.2)
    assert both_high.mean() > 0.05


def test_a_camera_copy_is_clipped_then_prepared_as_the_device_prepares_a_frame() -> None:
    rng = np.random.default_rng(1)
    raw = _smear(rng)
    gains = np.array([1.25, 1.0, 1.25])
    out = cameras.camera_copy(raw, gains, (32, 32), "center_crop", "background")
    shot = np.clip(raw.astype(np.float32) * gains.astype(np.float32), 0, 255).astype(np.uint8)
    assert (shot[..., 2] == 255).mean() > 0.8  # the blue channel is clipped nearly everywhere
    np.testing.assert_array_equal(out, prepare(shot, (32, 32), "center_crop", white_reference="background"))
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    # the device's white reference maps its background to neutral, as for the clean image
    bg = np.median(out.reshape(-1, 3)[out.reshape(-1, 3).sum(1) > 600], axis=0)
    assert np.ptp(bg) <= 4


def test_camera_copies_read_each_file_with_its_own_gains(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    paths = []
    for i in range(3):
        p = tmp_path / f"{i}.png"
        cv2.imwrite(str(p), cv2.cvtColor(_smear(rng), cv2.COLOR_RGB2BGR))
        paths.append(p)
    a = cameras.camera_copies(paths, np.random.default_rng(5), (32, 32), "center_crop", None)
    b = cameras.camera_copies(paths, np.random.default_rng(5), (32, 32), "center_crop", None)
    assert a.shape == (3, 32, 32, 3)
    np.testing.assert_array_equal(a, b)  # seeded
    c = cameras.camera_copies(paths, np.random.default_rng(6), (32, 32), "center_crop", None)
    assert not np.array_equal(a, c)


@pytest.mark.slow
def test_content_statistics_fit_the_stride_statistics_on_the_camera_copies_too(
    tmp_path: Path, monkeypatch
) -> None:
    """`_content_statistics(with_cameras=True)`: each stride's statistics get the clean images, their
    augmented copies and their camera copies, with the labels in the same order; the pooled statistics
    stay on the clean images; the stain-outlier head's familiar side grows by the camera copies."""
    pytest.importorskip("tensorflow")
    from make_tiny_bundle import LABELS, build_model

    from convert import content, outliers
    from convert.pipeline import RunDir, _content_statistics

    rng = np.random.default_rng(3)
    rows = []
    for i in range(20):
        p = tmp_path / f"{i}.png"
        cv2.imwrite(str(p), cv2.cvtColor(_smear(rng), cv2.COLOR_RGB2BGR))
        rows.append({"path": str(p), "label": LABELS[i % 4]})
    split = {"labels": list(LABELS), "train": rows[:12], "val": rows[12:]}
    config = {"size": 32, "white_reference": "background", "seed": 0, "augment": "robust"}
    (tmp_path / "split.json").write_text(json.dumps(split))
    run = RunDir(tmp_path, config, split)
    model = build_model(32, len(LABELS), seed=1)

    fitted: list[tuple[int, np.ndarray]] = []

    def spy(features, y, k):
        """Records which features and labels reach the statistics. The real Ledoit-Wolf fit of 1280-d
        pooled features costs seconds a call (18 calls here) and is test_content_check.py's subject: this
        returns the class means with an identity whitening, the shape the callers use."""
        features = np.asarray(features, np.float64)
        assert np.isfinite(features).all()
        fitted.append((len(features), np.asarray(y)))
        means = np.stack([features[np.asarray(y) == c].mean(axis=0) for c in range(k)])
        return {"means": means, "whiten": np.eye(features.shape[1]), "shrinkage": 0.0}

    familiar_sizes: list[int] = []
    real_head = outliers.fit

    def spy_head(familiar, far, val_clean, c=0.1):
        familiar_sizes.append(len(familiar))
        return real_head(familiar, far, val_clean, c)

    monkeypatch.setattr(content, "fit_statistics", spy)
    monkeypatch.setattr(outliers, "fit", spy_head)
    calls = []
    real_copies = cameras.camera_copies
    monkeypatch.setattr(cameras, "camera_copies", lambda *a, **k: calls.append(1) or real_copies(*a, **k))

    _content_statistics(run, model, 1, (16,), False, batch=5, with_outliers=True, with_cameras=1)
    y = np.arange(12) % 4
    assert len(calls) == 3  # one per batch of 5, 5, 2
    pooled_fit, stride_fit = fitted[0], fitted[-1]
    assert pooled_fit[0] == 12  # the pooled statistics: clean images only
    assert stride_fit[0] == 36  # clean + augmented + camera copy of each
    want = np.concatenate([y, *[np.tile(y[i : i + 5], 2) for i in range(0, 12, 5)]])
    np.testing.assert_array_equal(stride_fit[1], want)
    assert familiar_sizes == [36]  # clean + augmented + camera copies

    fitted.clear(), familiar_sizes.clear()
    _content_statistics(run, model, 1, (16,), False, batch=5, with_outliers=True, with_cameras=0)
    assert fitted[-1][0] == 24 and familiar_sizes == [24]
    np.testing.assert_array_equal(fitted[-1][1], np.concatenate([y, y]))

    fitted.clear(), familiar_sizes.clear()
    _content_statistics(run, model, 1, (16,), False, batch=5, with_outliers=True, with_cameras=2)
    assert fitted[-1][0] == 48 and familiar_sizes == [48]
    want = np.concatenate([y, *[np.tile(y[i : i + 5], 3) for i in range(0, 12, 5)]])
    np.testing.assert_array_equal(fitted[-1][1], want)


def test_a_negative_number_of_camera_copies_is_refused_before_any_work(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    from convert.pipeline import convert_run
    from device.errors import SmearscopeError

    with pytest.raises(SmearscopeError, match="camera-copies"):
        convert_run(tmp_path / "no-run", tmp_path / "out", camera_copies=-1)
    assert not (tmp_path / "out").exists()
