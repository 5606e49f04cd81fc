"""Frame → field result (device/optics/analyse.py) and the scale check (scalecheck.py), with the tiny
bundle. The red-cell estimator is passed in, in the `device.optics.scale.ScaleEstimate` shape."""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest
from test_tiling import smear

from device.models.ensemble import Ensemble
from device.optics.analyse import AcquisitionSettings, FieldClassifier, PendingChecks, parse_scale
from device.optics.scalecheck import MISMATCH, check_scale


@dataclass
class Estimate:
    diameter_px: float | None
    n_cells: int = 40
    spread: float | None = 0.1
    confident: bool = True
    reason: str | None = None

    def um_per_px(self, rbc_um: float = 7.5) -> float | None:
        return rbc_um / self.diameter_px if self.diameter_px else None


class RedCells:
    """Answers as if the image's red cells were `um` µm/px at full size; records the sizes seen. An
    image with the frame's aspect is a resized copy; another one a crop at full resolution (what
    the scale check cuts when red cells are small)."""

    def __init__(self, um: float | None, full_width: int, full_aspect: float = 4 / 3):
        self.um, self.full_width, self.aspect, self.seen = um, full_width, full_aspect, []

    def __call__(self, rgb, *, rbc_um=7.5, expected_diameter_px=None):
        self.seen.append(rgb.shape[1])
        if self.um is None:
            return Estimate(None, 2, None, False, "too few red cells (2)")
        resized = abs(rgb.shape[1] / rgb.shape[0] - self.aspect) < 0.02
        f = rgb.shape[1] / self.full_width if resized else 1.0
        return Estimate(rbc_um / (self.um / f))


@pytest.fixture
def fields(tiny_bundle):
    ens = Ensemble.from_dirs([str(tiny_bundle)], abstain_on_disagreement=True)

    def make(model_um: float | None, estimator=None, **kw) -> FieldClassifier:
        fc = FieldClassifier(ens, AcquisitionSettings(**kw), estimator=estimator)
        fc.spec = dataclasses.replace(fc.spec, um_per_px=model_um)
        return fc

    return make


def test_parse_scale():
    assert parse_scale(None) is None and parse_scale(" ") is None
    assert parse_scale("AUTO") == "auto" and parse_scale("0.25") == 0.25
    for bad in ("fast", "0", "-1"):
        with pytest.raises(ValueError):
            parse_scale(bad)


def test_scale_check_on_a_shrunk_copy_and_its_verdicts():
    big = np.full((1080, 1920, 3), 230, np.uint8)
    est = RedCells(0.03, 1920, 16 / 9)  # red cells 250 px wide: estimated on a copy ~24 px per cell
    c = check_scale(big, 0.03, tolerance=0.2, rbc_um=7.5, estimator=est)
    assert c.ran and c.ok and c.ratio == pytest.approx(1.0, rel=0.01)
    assert est.seen[-1] < 400
    c = check_scale(big, 0.022, tolerance=0.2, rbc_um=7.5, estimator=est)
    assert c.ran and not c.ok and c.message.startswith(MISMATCH)
    c = check_scale(big, 0.03, tolerance=0.2, rbc_um=7.5, estimator=RedCells(None, 1920))
    assert not c.ran and c.ok and "could not tell" in c.message
    assert not check_scale(big, None, tolerance=0.2, rbc_um=7.5, estimator=est).ran


def test_only_a_firm_estimate_refuses_a_frame():
    from device.optics.scale import FIRM_SPREAD, MAX_SPREAD, ScaleEstimate

    img = np.full((300, 300, 3), 230, np.uint8)
    loose = (FIRM_SPREAD + MAX_SPREAD) / 2

    def est(spread: float):
        def estimate(rgb, rbc_um, expected_diameter_px=None):
            return ScaleEstimate(15.0, 40, spread, True, None, rbc_um)  # 0.5 µm/px

        return estimate

    firm = check_scale(img, 0.3, tolerance=0.2, rbc_um=7.5, estimator=est(0.2))
    assert firm.ran and not firm.ok and firm.message.startswith(MISMATCH)
    soft = check_scale(img, 0.3, tolerance=0.2, rbc_um=7.5, estimator=est(loose))
    assert not soft.ran and soft.ok and "could not tell" in soft.message and "spread" in soft.message
    # within the tolerance a loose estimate still confirms the scale
    agree = check_scale(img, 0.5, tolerance=0.2, rbc_um=7.5, estimator=est(loose))
    assert agree.ran and agree.ok


def test_profile_scale_mismatch_is_not_classified(fields):
    frame = smear(400, 300, 0.5, [(0.5, 0.5)])
    fc = fields(0.25, RedCells(0.8, 400))  # the red cells say 0.8, the profile says 0.5
    a = fc.analyse(frame, 0.5, source="profile:HQ 40x")
    assert a.field.state == "refused" and a.prediction.abstained
    assert a.field.reason.startswith(MISMATCH)
    ok = fields(0.25, RedCells(0.52, 400)).analyse(frame, 0.5, source="profile:HQ 40x")
    assert ok.field.state in ("classified", "uncertain") and ok.prepared.check.ok
    assert ok.prepared.um_per_px == 0.5 and ok.prepared.plan.factor == pytest.approx(2.0)


def test_auto_scale_and_when_the_red_cells_cannot_tell(fields):
    frame = smear(400, 300, 0.5, [(0.5, 0.5)])
    a = fields(0.25, RedCells(0.5, 400)).analyse(frame, "auto")
    assert a.prepared.scale_source == "auto" and a.prepared.um_per_px == pytest.approx(0.5)
    assert a.field.state != "refused" and a.prepared.plan.selected
    a = fields(0.25, RedCells(None, 400)).analyse(frame, "auto")
    assert a.field.state == "refused" and a.prediction.abstained
    assert "cannot tell" in a.field.reason and "too few red cells" in a.field.reason


def test_without_a_scale_the_image_is_assumed_at_the_models_scale_and_checked(fields):
    frame = smear(192, 192, 0.5, [(0.5, 0.5)])
    # legacy: 192 px -> one 64 px tile, i.e. the image is taken to be 0.25 x 64 / 192 = 0.083 µm/px
    assert fields(0.25, RedCells(0.25 / 3, 192, 1.0)).analyse(frame, None).field.state != "refused"
    fc = fields(0.25, RedCells(0.25 / 6, 192, 1.0))  # twice the magnification
    a = fc.analyse(frame, None)  # a file: today's call, the failed check reported
    assert a.field.state != "refused" and not a.prepared.check.ok and "'auto'" in a.prepared.check.message
    a = fc.classify(fc.prepare(frame, None, refuse_assumed=True))  # the daemon: not called
    assert a.field.state == "refused" and "'auto'" in a.field.reason


def test_scale_unknown_bundle_runs_no_check(fields):
    frame = smear(192, 192, 0.5, [(0.5, 0.5)])
    a = fields(None, RedCells(0.1, 192)).analyse(frame, 0.5)
    assert a.prepared.plan.legacy and not a.prepared.check.ran
    assert "scale unknown" in a.prepared.check.message


def test_no_white_cells_is_never_benign(fields):
    a = fields(0.25, RedCells(0.5, 400)).analyse(smear(400, 300, 0.5, []), 0.5)
    assert a.field.state == "no_cells" and a.field.display == "no white cells in view"
    assert a.prediction.abstained and a.field.label is None


def test_scale_check_looks_at_a_centre_square_then_one_twice_as_wide():
    from device.optics.scalecheck import estimate_um_per_px

    frame = np.full((1080, 1920, 3), 230, np.uint8)
    seen = []

    def red_cells_15px(rgb, *, rbc_um=7.5, expected_diameter_px=None):  # cells 15 px wide at full resolution
        seen.append(rgb.shape[:2])
        return Estimate(15.0)

    um, _ = estimate_um_per_px(frame, rbc_um=7.5, expected_um_per_px=0.5, estimator=red_cells_15px)
    assert seen == [(160, 160)] and um == pytest.approx(0.5)  # 8 cell diameters (>= 160 px), not 2 Mpx
    seen.clear()

    def only_the_whole(rgb, *, rbc_um=7.5, expected_diameter_px=None):
        seen.append(rgb.shape[:2])
        return Estimate(15.0) if rgb.shape[0] == 320 else Estimate(None, 3, None, False, "few cells")

    um, _ = estimate_um_per_px(frame, rbc_um=7.5, expected_um_per_px=0.5, estimator=only_the_whole)
    assert seen == [(160, 160), (320, 320)] and um == pytest.approx(0.5)


def _warm(fc: FieldClassifier, frame: np.ndarray) -> np.ndarray:
    """A warm camera's frame (red clipped in the background); its red background is taken as 300,
    i.e. extrapolated (how far is device/colour.py's business, tested there)."""
    from device.colour import WhiteReference, apply_gains

    fc.white_reference = "background"  # as the shipped bundles declare
    fc._white = lambda rgb: WhiteReference(np.array([300.0, 236.0, 205.0]))
    return apply_gains(frame, (1.3, 1.0, 0.85))


def test_a_clipped_background_is_classified_at_the_white_the_models_know_best(fields, monkeypatch):
    fc = fields(0.25, RedCells(0.5, 400))
    warm = _warm(fc, smear(400, 300, 0.5, [(0.5, 0.5)]))
    seen: list[float] = []

    def unfamiliarity(tiles):  # these "models" know best the rendering whose tiles are least red
        red = float(np.mean([t[..., 0].mean() for t in tiles]))
        seen.append(red)
        return int(red > min(seen) + 0.5 or len(seen) == 1), red  # the measured one fires a check

    monkeypatch.setattr(fc.ensemble, "unfamiliarity", unfamiliarity)
    prepared = fc.prepare(warm, 0.5)
    assert prepared.white.extrapolated and len(prepared.alternatives) >= 2
    options = [prepared.white, *(w for w, _ in prepared.alternatives)]
    a = fc.classify(prepared)
    assert len(seen) == len(options) and a.prepared.white_candidates == len(options)
    assert a.prepared.white is options[int(np.argmin(seen))]
    assert a.prepared.white.background[0] == max(w.background[0] for w in options)  # the least red
    assert a.field.state in ("classified", "uncertain") and not a.prepared.alternatives
    record = a.to_dict()["white_reference"]
    assert record["extrapolated"] == ["R"] and record["candidates"] == len(options)
    tile = a.prepared.plan.selected[0].rgb
    assert tile[..., 0].mean() == pytest.approx(min(seen), abs=1e-6)


def test_ties_keep_the_measured_white_and_the_choice_can_be_switched_off(fields, monkeypatch):
    fc = fields(0.25, RedCells(0.5, 400))
    warm = _warm(fc, smear(400, 300, 0.5, [(0.5, 0.5)]))
    distances = iter([1.04, 1.0, 0.96, 2.0])  # no check fires; the measured one is a little farther
    monkeypatch.setattr(fc.ensemble, "unfamiliarity", lambda tiles: (0, next(distances)))
    prepared = fc.prepare(warm, 0.5)
    measured = prepared.white
    assert fc.classify(prepared).prepared.white is measured
    distances = iter([3.0, 1.0, 0.95, 2.0])  # ... far farther (beyond the margin): the closest wins
    prepared = fc.prepare(warm, 0.5)
    closest = prepared.alternatives[1][0]
    assert fc.classify(prepared).prepared.white is closest
    off = fields(0.25, RedCells(0.5, 400), clipped_white_choice=False)
    _warm(off, warm)
    p = off.prepare(warm, 0.5)
    assert p.white.extrapolated and not p.alternatives
    assert off.classify(p).prepared.white_candidates == 1
    # a frame whose background is not clipped has nothing to choose between
    plain = fields(0.25, RedCells(0.5, 400))
    plain.white_reference = "background"
    p = plain.prepare(smear(400, 300, 0.5, [(0.5, 0.5)]), 0.5)
    assert p.white is not None and not p.white.extrapolated and not p.alternatives


def test_deferred_colour_checks_are_filled_on_the_gates_thread_while_the_tiles_are_classified(fields):
    """The daemon's split: `prepare(defer_check=True)` leaves the tiles' colour checks (and the red-cell
    check) to `run_check` on another thread; the classifier may start first and still gets the same
    verdicts as the one-thread path, and a failing check surfaces as an error, never as a silent pass."""
    frame = smear(400, 300, 0.5, [(0.3, 0.4), (0.7, 0.6)])
    fc = fields(0.25, RedCells(0.5, 400))
    reference = fc.analyse(frame, 0.5, source="profile:HQ 40x")
    prepared = fc.prepare(frame, 0.5, source="profile:HQ 40x", defer_check=True)
    assert isinstance(prepared.prechecks, PendingChecks) and len(prepared.prechecks) == len(
        prepared.plan.selected
    )
    assert not prepared.check.ran  # pending
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(a=fc.classify(prepared, with_cam=False)))
    worker.start()
    time.sleep(0.05)
    assert worker.is_alive()  # waiting for the first tile's colour check
    fc.ensemble.tile_colour_reasons = lambda rgb: ["colour unlike the training images (test)"]
    fc.run_check(prepared)
    worker.join(5)
    a = result["a"]
    assert prepared.check.ran and prepared.check.ok
    assert len(a.field.tiles) == len(reference.field.tiles)
    assert all(p.abstained and "colour unlike" in p.reason for p in a.field.tiles)

    pending = PendingChecks(2, timeout=0.05)
    pending.put(0, [])
    assert pending[0] == []
    with pytest.raises(RuntimeError, match="did not finish"):
        pending[1]
    pending.fail("boom")
    with pytest.raises(RuntimeError, match="colour check failed: boom"):
        pending[0]


def test_acquisition_defaults_are_the_configs():
    from device.config import Config

    assert AcquisitionSettings() == AcquisitionSettings.from_config(Config())  # one truth: device/config.py
