"""device.cells.detect / crop: synthetic smears drawn with OpenCV, the answer known by construction."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from device.cells.crop import crop_cell
from device.cells.detect import OTHER, PLATELET, WHITE, Cell, DetectParams, detect_cells

UM = 0.25  # µm per pixel of the drawn scenes
BACKGROUND = (236, 234, 238)
RBC = (222, 178, 190)  # pale pink, no nucleus
CYTOPLASM = (196, 196, 228)  # pale blue
NUCLEUS = (110, 60, 150)  # dark purple
PLATELET_RGB = (150, 100, 170)


def px(um: float) -> int:
    return round(um / UM)


def scene(w_um: float = 80, h_um: float = 60, *, rbcs: list[tuple[float, float]] = ()) -> np.ndarray:
    img = np.zeros((px(h_um), px(w_um), 3), np.uint8)
    img[:] = BACKGROUND
    for x, y in rbcs:
        cv2.circle(img, (px(x), px(y)), px(3.75), RBC, -1, cv2.LINE_AA)
    return img


def white_cell(
    img: np.ndarray, x: float, y: float, *, nucleus_um: float = 8.0, cell_um: float = 12.0
) -> None:
    cv2.circle(img, (px(x), px(y)), px(cell_um / 2), CYTOPLASM, -1, cv2.LINE_AA)
    cv2.circle(img, (px(x), px(y)), px(nucleus_um / 2), NUCLEUS, -1, cv2.LINE_AA)


def whites(cells: list[Cell]) -> list[Cell]:
    return [c for c in cells if c.kind == WHITE]


def near(cell: Cell, x_um: float, y_um: float, tol_um: float = 1.5) -> bool:
    return np.hypot(cell.x * UM - x_um, cell.y * UM - y_um) <= tol_um


RBC_GRID = [(x, y) for x in range(6, 80, 9) for y in range(6, 60, 9) if not (20 < x < 66 and 16 < y < 46)]


def test_each_white_cell_found_among_red_cells_at_its_centre():
    img = scene(rbcs=RBC_GRID)
    centres = [(28, 24), (55, 24), (28, 40), (55, 40)]
    for x, y in centres:
        white_cell(img, x, y)
    found = detect_cells(img, UM)
    w = whites(found)
    assert len(w) == 4
    for x, y in centres:
        assert sum(near(c, x, y) for c in w) == 1
    # red cells are not nucleated: nothing else is reported
    assert len(found) == 4
    c = w[0]
    assert 40 < c.nucleus_area_um2 < 60  # a disc 8 µm across: 50 µm²
    assert c.nucleus_area_um2 < c.cell_area_um2
    assert not c.touches_edge and 0 <= c.score <= 1


def test_touching_and_overlapping_cells_are_separated():
    img = scene()
    white_cell(img, 25, 30, nucleus_um=9, cell_um=11)
    white_cell(img, 25 + 11, 30, nucleus_um=9, cell_um=11)  # cells touch, nuclei 2 µm apart
    white_cell(img, 58, 30, nucleus_um=9, cell_um=9)
    white_cell(img, 58 + 7, 30, nucleus_um=9, cell_um=9)  # nuclei overlap (centres 0.78 diameter apart)
    w = whites(detect_cells(img, UM))
    assert len(w) == 4
    for x in (25, 36, 58, 65):
        assert sum(near(c, x, 30, 2.0) for c in w) == 1


def test_three_lobed_nucleus_is_one_cell():
    img = scene()
    cv2.circle(img, (px(40), px(30)), px(6), CYTOPLASM, -1, cv2.LINE_AA)
    for dx, dy in ((-3.0, -1.5), (0.0, 2.0), (3.0, -1.5)):  # three lobes 3.4 µm wide, 0.5-1 µm apart
        cv2.circle(img, (px(40 + dx), px(30 + dy)), px(1.7), NUCLEUS, -1, cv2.LINE_AA)
    w = whites(detect_cells(img, UM))
    assert len(w) == 1
    assert near(w[0], 40, 30 - 1 / 3, 1.5)


def test_platelets_are_named_and_not_white():
    img = scene(rbcs=[(10, 10), (70, 50)])
    for x, y in ((20, 30), (40, 15), (60, 40)):
        cv2.circle(img, (px(x), px(y)), px(1.25), PLATELET_RGB, -1, cv2.LINE_AA)
    white_cell(img, 40, 40)
    found = detect_cells(img, UM)
    assert [c.kind for c in found].count(PLATELET) == 3
    assert len(whites(found)) == 1


def test_a_large_purple_smear_is_other_not_white():
    img = scene()
    cv2.ellipse(img, (px(40), px(30)), (px(16), px(12)), 0, 0, 360, NUCLEUS, -1)  # 600 µm²: no nucleus
    found = detect_cells(img, UM)
    assert [c.kind for c in found] == [OTHER]


def test_cell_cut_by_the_border_touches_edge_and_box_is_clipped():
    img = scene(rbcs=[(40, 30)])
    white_cell(img, 2, 30)  # half outside on the left
    white_cell(img, 50, 30)
    w = whites(detect_cells(img, UM))
    assert len(w) == 2
    edge = [c for c in w if c.touches_edge]
    assert len(edge) == 1 and edge[0].box[0] == 0 and edge[0].x * UM < 5
    inner = [c for c in w if not c.touches_edge][0]
    x0, y0, x1, y1 = inner.box
    assert x0 <= inner.x <= x1 and y0 <= inner.y <= y1
    assert 8 / UM <= x1 - x0 <= 20 / UM  # the 12 µm cell's extent, with at most a few µm around


def test_image_smaller_than_one_cell():
    img = scene(6, 6)
    cv2.circle(img, (px(3), px(3)), px(4), NUCLEUS, -1)  # the nucleus fills the little image
    found = detect_cells(img, UM)
    assert len(found) <= 1
    assert all(c.touches_edge for c in found)
    assert detect_cells(np.full((1, 1, 3), 200, np.uint8), 0.5) == []


def test_same_cells_at_a_finer_scale_and_under_another_white_balance():
    img = scene(rbcs=RBC_GRID)
    for x, y in ((28, 24), (55, 40)):
        white_cell(img, x, y)
    fine = cv2.resize(img, None, fx=2.5, fy=2.5, interpolation=cv2.INTER_LINEAR)  # 0.1 µm/px
    w = whites(detect_cells(fine, UM / 2.5))
    assert len(w) == 2
    fine_um = UM / 2.5
    assert sorted((round(c.x * fine_um), round(c.y * fine_um)) for c in w) == [(28, 24), (55, 40)]
    warm = np.clip(img.astype(np.float32) * (1.15, 1.0, 0.8), 0, 255).astype(np.uint8)
    assert len(whites(detect_cells(warm, UM))) == 2


def test_params_change_the_answer():
    img = scene()
    white_cell(img, 40, 30, nucleus_um=4, cell_um=7)  # a 12.6 µm² nucleus
    assert len(whites(detect_cells(img, UM))) == 1
    assert whites(detect_cells(img, UM, params=DetectParams(min_nucleus_um2=20))) == []


@pytest.mark.parametrize(
    "bad, um",
    [
        (np.zeros((10, 10), np.uint8), 0.5),
        (np.zeros((10, 10, 3), np.float32), 0.5),
        (np.zeros((10, 10, 3), np.uint8), 0),
    ],
)
def test_bad_input_is_refused(bad, um):
    with pytest.raises(ValueError):
        detect_cells(bad, um)


def _cell(x: float, y: float) -> Cell:
    return Cell(x, y, (0, 0, 1, 1), 50.0, 100.0, WHITE, 1.0, False)


def test_crop_is_centred_at_the_physical_size():
    img = np.zeros((200, 300, 3), np.uint8)
    img[:] = 200
    img[100, 150] = (255, 0, 0)  # the cell's centre
    out = crop_cell(img, _cell(150, 100), 0.5, side_um=20.5, size=41)  # 41 px wide: no resampling
    assert out.shape == (41, 41, 3) and out.dtype == np.uint8
    assert tuple(out[20, 20]) == (255, 0, 0)
    assert (out[:, :, 1] == 200).sum() == 41 * 41 - 1


def test_crop_shrinks_with_inter_area():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (300, 300, 3), dtype=np.uint8)
    out = crop_cell(img, _cell(149.5, 149.5), 0.25, side_um=40, size=80)  # 160 px -> 80
    expected = cv2.resize(img[70:230, 70:230], (80, 80), interpolation=cv2.INTER_AREA)
    assert np.array_equal(out, expected)


def test_crop_reflects_outside_the_frame():
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (50, 60, 3), dtype=np.uint8)
    out = crop_cell(img, _cell(0, 0), 1.0, side_um=21, size=21)  # centre on the corner pixel
    expected = cv2.copyMakeBorder(img[:11, :11], 10, 0, 10, 0, cv2.BORDER_REFLECT_101)
    assert np.array_equal(out, expected)
    tiny = crop_cell(img[:1, :1], _cell(0, 0), 1.0, side_um=9, size=9)  # a one-pixel image
    assert tiny.shape == (9, 9, 3) and (tiny == img[0, 0]).all()


GRANULAR = (
    190,
    150,
    200,
)  # a neutrophil's lilac cytoplasm: passes the nuclear colour test, paler than chromatin


def lobed_cell(img: np.ndarray, x: float, y: float) -> None:
    cv2.circle(img, (px(x), px(y)), px(6), GRANULAR, -1, cv2.LINE_AA)
    for dx, dy in ((-3.0, -1.5), (0.0, 2.0), (3.0, -1.5)):
        cv2.circle(img, (px(x + dx), px(y + dy)), px(1.7), NUCLEUS, -1, cv2.LINE_AA)


def test_overlapping_cells_with_granular_cytoplasm_are_separated_by_their_chromatin():
    img = scene(rbcs=[(10, 10), (70, 50)])
    lobed_cell(img, 20, 30)  # alone: its cytoplasm and lobes are one cell
    lobed_cell(img, 45, 30)
    lobed_cell(img, 52, 30)  # overlapping the previous one by 40% of its width: no waist in the mask
    w = whites(detect_cells(img, UM))
    assert len(w) == 3
    # without the chromatin cores the overlapping pair is one cell
    assert len(whites(detect_cells(img, UM, params=DetectParams(core_min_od=100.0)))) == 2
    for x in (20, 45, 52):
        assert sum(near(c, x, 30, 2.5) for c in w) == 1
