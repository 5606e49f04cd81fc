"""The red-cell scale estimator (device.optics.scale) on synthetic smears and the sample slides."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from smearkit import synthetic_smear

from device.colour import estimate_background
from device.optics.render import mirror_mosaic, render_at_scale, tint
from device.optics.scale import RBC_DIAMETER_UM, ScaleEstimate, estimate_scale
from device.preprocess import read_image

SAMPLES = sorted((Path(__file__).resolve().parents[1] / "device" / "samples").glob("*.jpg"))


@pytest.mark.parametrize("diameter", [10, 20, 40, 100, 300])
def test_synthetic_overlapping_cells_at_every_scale(diameter):
    rgb = synthetic_smear(diameter, cells=60 if diameter < 300 else 24, overlap=True, seed=diameter)
    est = estimate_scale(rgb)
    assert est.confident, est
    assert est.diameter_px == pytest.approx(diameter, rel=0.10)
    assert est.n_cells >= 10


@pytest.mark.parametrize("expected", [24, 12, 48])
def test_an_expected_size_starts_the_fine_passes_and_a_wrong_one_is_corrected(expected):
    """The scale check passes the calibration's cell size instead of running the coarse pass: right,
    it gives the free estimate; half or twice the true size, the passes still find the true one."""
    rgb = synthetic_smear(24, cells=60, overlap=True, seed=11)
    free = estimate_scale(rgb)
    hinted = estimate_scale(rgb, expected_diameter_px=expected)
    assert hinted.confident, hinted
    assert hinted.diameter_px == pytest.approx(24, rel=0.10)
    assert hinted.diameter_px == pytest.approx(free.diameter_px, rel=0.05)


def test_white_cells_crowding_the_field_are_not_taken_for_red_cells():
    # Nucleated cells twice the red cells' size covering a large part of the field.
    rgb = synthetic_smear(20, cells=40, wbcs=14, seed=3)
    est = estimate_scale(rgb)
    assert est.diameter_px == pytest.approx(20, rel=0.10), est


def test_touching_cells_keep_their_own_size():
    # A dense monolayer: cells overlap heavily, connected components would be many cells wide.
    rgb = synthetic_smear(24, cells=140, size=(300, 300), overlap=True, seed=5)
    est = estimate_scale(rgb)
    assert est.diameter_px == pytest.approx(24, rel=0.10), est


def test_blank_field_cannot_tell():
    rng = np.random.default_rng(0)
    blank = np.clip(rng.normal(235, 2, (240, 320, 3)), 0, 255).astype(np.uint8)
    est = estimate_scale(blank)
    assert not est.confident
    assert est.diameter_px is None and est.um_per_px() is None
    assert est.reason


def test_too_few_cells_is_not_confident():
    rgb = synthetic_smear(30, cells=3, wbcs=0, size=(400, 400), overlap=False, seed=1)
    est = estimate_scale(rgb)
    assert not est.confident
    assert "few" in (est.reason or "")


def test_black_frame_cannot_tell():
    est = estimate_scale(np.zeros((120, 160, 3), np.uint8))
    assert not est.confident and est.diameter_px is None
    assert "background" in (est.reason or "")


def test_um_per_px_uses_the_reference_diameter():
    est = ScaleEstimate(diameter_px=20.0, n_cells=50, spread=0.1, confident=True)
    assert est.um_per_px() == pytest.approx(RBC_DIAMETER_UM / 20)
    assert est.um_per_px(8.0) == pytest.approx(0.4)
    assert ScaleEstimate(20.0, 50, 0.1, True, rbc_um=7.0).um_per_px() == pytest.approx(0.35)
    assert est.to_dict()["um_per_px"] == pytest.approx(0.375)


def test_rejects_non_rgb_input():
    with pytest.raises(ValueError):
        estimate_scale(np.zeros((32, 32), np.uint8))


@pytest.mark.parametrize("path", SAMPLES[::2], ids=lambda p: p.stem[:24])
def test_sample_slides_are_consistent_across_magnifications(path):
    rgb = read_image(path)
    base = estimate_scale(rgb)
    assert base.diameter_px is not None, base
    assert 10 < base.diameter_px < 30  # red cells are about 13-19 px across in the dataset's 224-px images
    for mag in (0.5, 2.0):
        est = estimate_scale(render_at_scale(rgb, mag, mosaic=2 if mag > 1 else 1))
        ref = estimate_scale(mirror_mosaic(rgb, 2, 2)) if mag > 1 else base
        assert est.diameter_px == pytest.approx(ref.diameter_px * mag, rel=0.10), (mag, est, ref)


def test_a_warm_white_balance_does_not_change_the_estimate():
    # Red x1.12 clips the background's red channel: the background must still be found.
    for path in SAMPLES[1::5]:
        rgb = read_image(path)
        warm = tint(rgb, 1.12, 0.85)
        bg = estimate_background(warm)
        # green is untouched by the tint: the background stays as bright there (not a cell's colour)
        assert bg is not None and bg[0] >= 250 and bg[1] >= 250 and bg[2] < 225, bg
        a, b = estimate_scale(rgb), estimate_scale(warm)
        assert b.diameter_px == pytest.approx(a.diameter_px, rel=0.08), (path.name, a, b)


def test_a_clipped_red_background_does_not_change_the_estimate():
    # Red x1.25 clips the whole background's red: against the clipped reading every red cell stayed too
    # red, nuclei lost their violet hue and merged into the red cells (two samples read 0.43x and 0.68x).
    for path in SAMPLES:
        rgb = read_image(path)
        a, b = estimate_scale(rgb), estimate_scale(tint(rgb, 1.25, 0.8))
        assert b.diameter_px == pytest.approx(a.diameter_px, rel=0.08), (path.name, a, b)


def test_every_sample_slide_gives_a_plausible_size():
    ests = [estimate_scale(read_image(p)) for p in SAMPLES]
    assert len(ests) == 16
    assert all(e.diameter_px and 11 < e.diameter_px < 22 for e in ests), ests
    assert sum(e.confident for e in ests) >= 12
    sizes = np.array([e.diameter_px for e in ests if e.confident])
    assert np.percentile(sizes, 75) / np.percentile(sizes, 25) < 1.25  # one dataset, one scale


@pytest.mark.parametrize(("diameter", "confident"), [(7.5, True), (10.0, True), (15.0, False), (40.0, False)])
def test_the_spread_gate_allows_the_blur_of_enlarging_tiny_cells(monkeypatch, diameter, confident):
    """A spread between MAX_SPREAD and MAX_SPREAD_SMALL is confident only for cells under SMALL_CELL_PX."""
    from device.optics import scale

    spread = (scale.MAX_SPREAD + scale.MAX_SPREAD_SMALL) / 2
    monkeypatch.setattr(scale, "_coarse", lambda rgb: diameter / 2)

    def analyse(img, radii, **kw):
        up = min(scale._MAX_UPSAMPLE, scale._TARGET_RADIUS / (diameter / 2))
        return scale._Pass(radius=diameter / 2 * up, n_cells=50, spread=spread, fg_fraction=0.3)

    monkeypatch.setattr(scale, "_analyse", analyse)
    est = estimate_scale(np.full((200, 200, 3), 200, np.uint8))
    assert est.diameter_px == pytest.approx(diameter, rel=0.01)
    assert est.confident is confident, est
    if not confident:
        assert "inconsistent" in (est.reason or "")


def test_an_estimate_from_few_red_cells_may_scale_a_picture_but_not_refuse_a_frame():
    from device.optics.scale import FIRM_CELLS, MIN_CELLS, ScaleEstimate

    few = ScaleEstimate(15.0, MIN_CELLS, 0.2, True)
    enough = ScaleEstimate(15.0, FIRM_CELLS, 0.2, True)
    assert few.confident and few.um_per_px() is not None and not few.firm
    assert enough.firm


def test_the_check_looks_wider_when_the_centre_holds_too_few_red_cells_to_refuse_on():
    from device.optics.scale import FIRM_CELLS, ScaleEstimate
    from device.optics.scalecheck import estimate_um_per_px

    calls = []

    def estimator(rgb, *, rbc_um, expected_diameter_px=None):
        calls.append(rgb.shape[:2])
        if len(calls) == 1:  # the centre square: 5 cells saying 0.55x
            return ScaleEstimate(2 * expected_diameter_px, 5, 0.2, True, rbc_um=rbc_um)
        return ScaleEstimate(expected_diameter_px, FIRM_CELLS + 4, 0.2, True, rbc_um=rbc_um)

    rgb = np.full((1080, 1920, 3), 230, np.uint8)
    um, est = estimate_um_per_px(rgb, rbc_um=7.5, expected_um_per_px=0.3, estimator=estimator)
    assert len(calls) == 2 and calls[1][0] > calls[0][0]  # a square twice as wide
    assert est.firm and abs(um - 0.3) < 1e-6
