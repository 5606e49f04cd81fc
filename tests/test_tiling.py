"""Frame → tiles (device/optics/tiling.py, nuclei.py) and the field rule (field.py)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from device.models.ensemble import Prediction
from device.optics.field import NO_CELLS, combine
from device.optics.nuclei import find_nuclei
from device.optics.tiling import TileSpec, plan_tiles, positions, stitch_heatmap
from device.paths import SAMPLES_DIR
from device.preprocess import read_image

BG = (238, 236, 240)
RBC = (214, 170, 178)  # pale pink red cell
NUCLEUS = (96, 62, 150)  # dark purple white-cell nucleus
LABELS = ["Benign", "Early", "Pre", "Pro"]
MALIGNANT = {"Early", "Pre", "Pro"}


def smear(w: int, h: int, um_per_px: float, wbc_at: list[tuple[float, float]], seed: int = 0) -> np.ndarray:
    """A synthetic field: red cells (7.5 µm) everywhere, white-cell nuclei (9 µm) at the given
    fractional positions."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), BG, np.uint8)
    r_rbc = max(2, round(3.75 / um_per_px))
    for _ in range(int(w * h / (r_rbc * r_rbc * 12))):
        c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.circle(img, c, r_rbc, RBC, -1)
    for fx, fy in wbc_at:
        cv2.circle(img, (round(fx * w), round(fy * h)), max(2, round(4.5 / um_per_px)), NUCLEUS, -1)
    return img


def test_positions_cover_with_overlap_and_touch_both_borders():
    assert positions(200, 288, 0.125) == [0]
    assert positions(576, 288, 0.0) == [0, 288]
    xs = positions(1000, 288, 0.125)
    assert xs[0] == 0 and xs[-1] == 1000 - 288
    steps = np.diff(xs)
    assert (steps <= 288 * (1 - 0.125) + 1).all() and len(xs) == 4


def test_tiles_at_the_model_scale_and_only_where_white_cells_are():
    # frame: 0.5 µm/px; models: 0.25 µm/px -> the frame is enlarged 2x, never stretched
    frame = smear(320, 200, 0.5, [(0.2, 0.3)])
    spec = TileSpec(96, 96, 0.25)
    plan = plan_tiles(frame, 0.5, spec)
    assert plan.factor == pytest.approx(2.0) and plan.scaled_size == (640, 400)
    assert plan.refused is None and not plan.legacy
    chosen = plan.selected
    assert 1 <= len(chosen) < len(plan.tiles)  # empty tiles skipped
    for t in chosen:
        assert t.rgb.shape == (96, 96, 3)
        x, y, w, h = plan.frame_box(t)
        assert w == pytest.approx(48) and h == pytest.approx(48)  # same factor on both axes
        assert x <= 0.2 * 320 <= x + w and y <= 0.3 * 200 <= y + h  # the tile holds the nucleus
    boxes = plan.outlines()
    assert {b["state"] for b in boxes} == {"classified", "skipped"}
    assert all(0 <= b["x"] <= 1 and 0 <= b["y"] <= 1 for b in boxes)


def test_a_field_of_red_cells_only_has_no_nucleated_tile():
    plan = plan_tiles(smear(400, 300, 0.3, []), 0.3, TileSpec(96, 96, 0.3))
    assert plan.tiles and not plan.selected
    field = combine([], LABELS, MALIGNANT)
    assert field.state == "no_cells" and field.display == NO_CELLS and field.label is None


def test_small_frame_is_padded_with_background_or_refused_never_stretched():
    spec = TileSpec(96, 96, 0.5)
    small = smear(60, 60, 0.5, [(0.5, 0.5)])  # 60 px: 62% of a tile side -> padded
    plan = plan_tiles(small, 0.5, spec)
    assert plan.refused is None and plan.pad == (18, 18)
    tile = plan.selected[0].rgb
    assert tile.shape == (96, 96, 3)
    assert np.abs(tile[0, 0].astype(int) - np.array(BG)).max() <= 3  # padding = background colour
    assert np.array_equal(tile[18:78, 18:78], small)  # the image itself, not resampled
    tiny = smear(40, 40, 0.5, [(0.5, 0.5)])  # 42% of a tile side -> refused
    refused = plan_tiles(tiny, 0.5, spec)
    assert refused.refused and "tile" in refused.refused and not refused.selected


def test_scale_unknown_is_the_legacy_centre_crop():
    frame = smear(200, 100, 0.5, [(0.5, 0.5)])
    plan = plan_tiles(frame, None, TileSpec(64, 64, None))
    assert plan.legacy and len(plan.selected) == 1
    from device.preprocess import prepare

    assert np.array_equal(plan.selected[0].rgb, prepare(frame, (64, 64), "center_crop"))


def test_nucleus_area_is_in_square_micrometres():
    frame = smear(300, 300, 0.5, [(0.5, 0.5)])  # one 9 µm nucleus = ~64 µm²
    assert find_nuclei(frame, 0.5).n_cells == 1
    from device.optics.nuclei import NucleusThresholds

    assert find_nuclei(frame, 0.5, NucleusThresholds(min_area_um2=100.0)).n_cells == 0


def test_nuclei_found_in_every_shipped_sample_field():
    for path in sorted(SAMPLES_DIR.glob("*.jpg")):
        # the dataset fields: 224 px, ~0.37 µm/px (red cells ~20 px)
        assert find_nuclei(read_image(path), 0.37).n_cells >= 1, path.name


def test_stitched_heatmap_lands_where_the_tile_was():
    frame = smear(320, 200, 0.5, [(0.8, 0.7)])
    plan = plan_tiles(frame, 0.5, TileSpec(96, 96, 0.25))
    t = plan.selected[0]
    heat = stitch_heatmap(plan, [(t, np.ones((3, 3), np.float32))], cell=8)
    assert heat.shape == (400 // 8, 640 // 8)
    ys, xs = np.nonzero(heat)
    assert xs.min() == t.x // 8 and ys.min() == t.y // 8
    assert heat.sum() == pytest.approx((96 // 8) ** 2)


def pred(label: str, conf: float = 0.95, abstained: bool = False, reason: str | None = None) -> Prediction:
    rest = (1 - conf) / 3
    probs = {lb: (conf if lb == label else rest) for lb in LABELS}
    return Prediction(LABELS, probs, label, conf, abstained, reason)


def test_rule_confident_benign_and_malignant_tiles_make_the_field_uncertain():
    f = combine([pred("Benign"), pred("Benign"), pred("Pre")], LABELS, MALIGNANT)
    assert f.abstained and f.state == "uncertain" and "benign and malignant" in f.reason


def test_rule_one_confident_malignant_tile_is_not_averaged_away():
    tiles = [pred("Pre", 0.9)] + [pred("Benign", 0.55, True, "confidence 0.55 below threshold")] * 6
    f = combine(tiles, LABELS, MALIGNANT)
    assert not f.abstained and f.label == "Pre" and f.confidence == pytest.approx(0.9)


def test_rule_doubtful_tile_leaning_malignant_blocks_a_benign_call():
    f = combine(
        [pred("Benign"), pred("Pro", 0.45, True, "confidence 0.45 below threshold")], LABELS, MALIGNANT
    )
    assert f.abstained and "lean malignant" in f.reason


def test_rule_benign_subtypes_and_all_abstained():
    assert combine([pred("Benign"), pred("Benign", 0.4, True, "x")], LABELS, MALIGNANT).label == "Benign"
    f = combine([pred("Benign"), pred("Benign", 0.8)], LABELS, MALIGNANT)
    assert not f.abstained and f.state == "classified" and f.confidence == pytest.approx(0.875)
    f = combine([pred("Pre"), pred("Pro")], LABELS, MALIGNANT)
    assert f.abstained and "subtypes differ" in f.reason
    f = combine([pred("Pre", 0.4, True, "models disagree")], LABELS, MALIGNANT)
    assert f.abstained and f.reason == "models disagree"


def test_rescale_is_one_factor_on_both_axes_and_close_to_a_plain_area_resize():
    from device.optics.tiling import rescale

    img = smear(1920, 1080, 0.1, [(0.5, 0.5)])
    for f in (0.514, 0.545, 0.36, 0.25, 0.5, 0.7, 1.7):  # near 1/2 and 1/3: blocks + a slight resample
        out = rescale(img, f)
        assert out.shape[:2] == (round(1080 * f), round(1920 * f))
        ref = cv2.resize(img, out.shape[1::-1], interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
        assert np.abs(out.astype(int) - ref.astype(int)).mean() < 3.0  # the same picture


@pytest.mark.parametrize("magnification", [2.5, 0.7])
def test_white_reference_applied_after_the_shrink_gives_the_same_tiles(magnification):
    """The tiling applies the frame's white reference to the rescaled frame when shrinking (fewer pixels)
    and before the rescale when enlarging: the tiles must be those of the normalised frame, to rounding,
    and the nucleus test (told the background) must pick the same tiles."""
    from device.colour import apply_gains, measure_white, normalise_background

    u_model = 0.37
    u_frame = u_model / magnification
    raw = smear(900, 640, u_frame, [(0.2, 0.3), (0.7, 0.6), (0.5, 0.85)], seed=3)
    warm = apply_gains(raw, (0.9, 1.0, 0.8))  # another camera's white balance, nothing clipped
    spec = TileSpec(288, 288, u_model)
    white = measure_white(warm)
    assert white is not None and white.extrapolated == []
    fast = plan_tiles(warm, u_frame, spec, white)
    plain = plan_tiles(normalise_background(warm), u_frame, spec)
    assert [(t.x, t.y, t.nucleated) for t in fast.tiles] == [(t.x, t.y, t.nucleated) for t in plain.tiles]
    assert fast.selected, "the field has white cells"
    for a, b in zip(fast.selected, plain.selected, strict=True):
        diff = np.abs(a.rgb.astype(int) - b.rgb.astype(int))
        assert diff.mean() < 0.6 and diff.max() <= 3
    # and the tiles are white-referenced: the background is neutral again
    bg = np.median(fast.selected[0].rgb.reshape(-1, 3), axis=0)
    assert np.ptp(bg) <= 4


def test_a_clipped_background_is_rebuilt_before_the_shrink():
    """A warm camera clips red in the background; the rebuilt (extrapolated) channel must not leave
    fringes where a shrink blended saturated pixels with their neighbours."""
    from device.colour import apply_gains, measure_white, normalise_background

    u_model, u_frame = 0.37, 0.37 / 2.5
    raw = smear(900, 640, u_frame, [(0.2, 0.3), (0.7, 0.6)], seed=4)
    warm = apply_gains(raw, (1.25, 1.0, 0.8))
    white = measure_white(warm)
    assert white is not None and white.extrapolated == [0]
    spec = TileSpec(288, 288, u_model)
    fast = plan_tiles(warm, u_frame, spec, white)
    plain = plan_tiles(normalise_background(warm), u_frame, spec)
    for a, b in zip(fast.selected, plain.selected, strict=True):
        assert np.array_equal(a.rgb, b.rgb)
