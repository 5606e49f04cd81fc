"""Noise and JPEG blocks (device/screening/detail.py): measured where the cell classifier sees them, and a
field beyond either limit keeps its cells unread and gets no call."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from test_screening import UM, frame, probs, stub
from test_screening_second import (
    MALIGNANT,
    Reader,
    cell_ensemble,  # noqa: F401 - fixture
)

from device.cells.count import UNCLASSIFIED
from device.screening.detail import blockiness, measure_detail, noise_sigma
from device.screening.screen import CellScreen
from device.screening.stages import COUNTED, ScreenSettings


def noisy(rgb: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, rgb.shape)
    return np.clip(rgb.astype(np.float64) + noise, 0, 255).astype(np.uint8)


def jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def textured(seed: int = 1) -> np.ndarray:
    """A smooth field with detail at every scale (blurred noise), so JPEG has something to block."""
    base = np.random.default_rng(seed).normal(128, 40, (240, 320, 3))
    return np.clip(cv2.GaussianBlur(base, (0, 0), 3), 0, 255).astype(np.uint8)


def test_the_noise_estimate_follows_added_noise():
    clean = frame()
    grey = lambda x: cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)  # noqa: E731
    assert noise_sigma(grey(clean)) < 1.0
    for sigma in (4.0, 10.0):
        assert noise_sigma(grey(noisy(clean, sigma))) == pytest.approx(sigma * 0.6, rel=0.4)
    assert noise_sigma(grey(noisy(clean, 10.0))) > noise_sigma(grey(noisy(clean, 4.0)))


def test_blockiness_reads_strong_jpeg_and_not_a_clean_picture():
    img = textured()
    grey = lambda x: cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)  # noqa: E731
    assert blockiness(grey(img)) == pytest.approx(1.0, abs=0.1)
    assert blockiness(grey(frame())) < 1.4  # a drawn picture: few steps at all, none made by blocks
    assert blockiness(grey(jpeg(img, 10))) > 1.6 > blockiness(grey(jpeg(img, 95)))


def test_noise_is_measured_at_the_models_pitch():
    """A finer camera's noise is averaged as the crops average it: the same noise on a frame 4x finer
    than the pitch reads about 4x smaller."""
    img = noisy(np.full((400, 400, 3), 200, np.uint8), 14.0)
    at_pitch = measure_detail(img, 0.479, 0.479, max_noise=6, max_blockiness=1.6)
    finer = measure_detail(img, 0.479 / 4, 0.479, max_noise=6, max_blockiness=1.6)
    assert at_pitch.problem and "too noisy" in at_pitch.problem
    assert finer.noise < at_pitch.noise / 2.5 and finer.problem is None


def test_a_noisy_field_keeps_its_cells_unread_and_gets_no_call_nor_second_reading(cell_ensemble, monkeypatch):  # noqa: F811
    stub(cell_ensemble, monkeypatch, [(probs(Benign=0.99, Pre=0.01), [])] * 4)
    reader = Reader(MALIGNANT)
    s = CellScreen(cell_ensemble, reader=reader)
    clean = s.screen(frame(), UM)
    assert not clean.abstained and clean.detail is not None and clean.detail.problem is None
    r = s.screen(noisy(frame(), 40.0), UM)
    assert r.state == COUNTED and r.abstained and "too noisy" in (r.reason or "")
    whites = r.white_records
    assert whites and all(c.state == UNCLASSIFIED and "too noisy" in (c.reason or "") for c in whites)
    assert r.differential is not None and r.differential.unclassified == len(whites)
    assert reader.reads == 0 and r.to_dict()["detail"]["problem"] == r.reason
    # the quality gate switched off switches the check off too
    off = CellScreen(cell_ensemble, ScreenSettings(detail_check=False)).screen(noisy(frame(), 40.0), UM)
    assert off.detail is None


def test_blocks_of_a_picture_far_finer_than_the_pitch_are_not_held_against_it():
    img = jpeg(textured(), 10)
    assert measure_detail(img, 0.479, 0.479, max_noise=6, max_blockiness=1.6).problem is not None
    fine = measure_detail(img, 0.11, 0.479, max_noise=6, max_blockiness=1.6)
    assert fine.blockiness is None and fine.problem is None
