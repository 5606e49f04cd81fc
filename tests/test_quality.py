"""Quality gate: the shipped sample slides pass; blurred, over/under-exposed and blank frames fail with
a reason a technician can act on."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from device.paths import SAMPLES_DIR
from device.preprocess import read_image
from device.quality import QualityThresholds, assess, passed


@pytest.fixture(scope="module")
def slides() -> list[np.ndarray]:
    files = sorted(SAMPLES_DIR.glob("*.jpg"))
    assert files, "device/samples/ has the replay camera's sample slides"
    return [read_image(p) for p in files]


def test_real_slides_pass(slides):
    for rgb in slides:
        q = assess(rgb)
        assert q.ok, q.reasons
        assert q.to_dict()["reasons"] == []


def test_larger_camera_frames_pass(slides):
    big = cv2.resize(slides[0], (1280, 960), interpolation=cv2.INTER_CUBIC)
    assert assess(big).ok


@pytest.mark.parametrize(
    "degrade, reason",
    [
        (lambda im: cv2.GaussianBlur(im, (0, 0), 3), "out of focus"),
        (lambda im: np.clip(im.astype(np.float32) * 2.5, 0, 255).astype(np.uint8), "over-exposed"),
        (lambda im: (im.astype(np.float32) * 0.15).astype(np.uint8), "blank field (no contrast)"),
        (lambda im: np.full_like(im, 228), "blank field (no contrast)"),
        (lambda im: np.zeros_like(im), "under-exposed"),
        (
            lambda im: cv2.cvtColor(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB),
            "no stained smear",
        ),
    ],
)
def test_bad_frames_fail_with_reason(slides, degrade, reason):
    q = assess(degrade(slides[4]))
    assert not q.ok
    assert reason in q.reasons


def test_thresholds_from_config():
    from device.config import load_config

    cfg = load_config(system_config=None, env={}, overrides={"quality": {"min_focus": 9e5}})
    t = QualityThresholds.from_config(cfg.quality)
    assert t.min_focus == 9e5


def test_disabled_gate():
    assert passed().ok
