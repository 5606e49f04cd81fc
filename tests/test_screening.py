"""device/screening: the frame → cells → result path on OpenCV-drawn smears (answers known by
construction), the record label rule with stubbed decisions, and the station running it."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
from make_tiny_bundle import make_cell_bundle

from device.cells.count import UNCLASSIFIED, UNNAMED, differential
from device.cells.record import CellRecord
from device.errors import BundleError
from device.models.ensemble import Ensemble, Prediction
from device.screening.result import field_call, field_line
from device.screening.screen import CELLS, FIELD, CellScreen, ensemble_kind, screen_frame
from device.screening.stages import COUNTED, NO_CELLS, REFUSED, FieldCells

UM = 0.25  # µm per pixel of the drawn frames
BACKGROUND = (236, 234, 238)
RBC = (222, 178, 190)
CYTOPLASM = (196, 196, 228)
NUCLEUS = (110, 60, 150)
WHITES = [(28, 24), (55, 24), (28, 40), (55, 40)]  # µm


def px(um: float) -> int:
    return round(um / UM)


def frame(whites=WHITES) -> np.ndarray:
    """An 80 x 60 µm field: red cells round its edge (the scale check reads them), white cells inside."""
    img = np.zeros((px(60), px(80), 3), np.uint8)
    img[:] = BACKGROUND
    for x in range(6, 80, 9):
        for y in range(6, 60, 9):
            if not (20 < x < 66 and 16 < y < 46):
                cv2.circle(img, (px(x), px(y)), px(3.75), RBC, -1, cv2.LINE_AA)
    for x, y in whites:
        cv2.circle(img, (px(x), px(y)), px(6), CYTOPLASM, -1, cv2.LINE_AA)
        cv2.circle(img, (px(x), px(y)), px(4), NUCLEUS, -1, cv2.LINE_AA)
    return img


@pytest.fixture(scope="module")
def cell_ensemble(tmp_path_factory) -> Ensemble:
    return Ensemble.from_dirs([str(make_cell_bundle(tmp_path_factory.mktemp("b") / "cells"))], num_threads=1)


def stub(ensemble: Ensemble, monkeypatch, rows: list[tuple[dict[str, float], list[str]]]) -> None:
    """The ensemble answers the i-th crop with rows[i] (calibrated probabilities, unfamiliar reasons)."""

    def classify_tiles(tiles, **kw):
        assert len(tiles) == len(rows)
        assert all(t.shape == (64, 64, 3) and t.dtype == np.uint8 for t in tiles)
        return [
            Prediction(list(p), p, max(p, key=p.get), max(p.values()), bool(u), None, unfamiliar=u)
            for p, u in rows
        ]

    monkeypatch.setattr(ensemble, "classify_tiles", classify_tiles)


def probs(**kw: float) -> dict[str, float]:
    base = dict.fromkeys(("Benign", "Early", "Pre", "Pro"), 0.0)
    return {**base, **kw}


def test_screen_frame_gives_typed_stages_with_boxes_in_frame_pixels(cell_ensemble, monkeypatch):
    rows = [(probs(Benign=0.98, Pre=0.02), [])] * 3 + [(probs(Pre=0.95, Benign=0.05), [])]
    stub(cell_ensemble, monkeypatch, rows)
    img = frame()
    r = screen_frame(img, UM, cell_ensemble)
    assert isinstance(r, FieldCells) and r.state == COUNTED
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.state = NO_CELLS  # type: ignore[misc]
    assert r.prepared.scale_check.ran and r.prepared.scale_check.ok
    assert r.prepared.frame_size == (img.shape[1], img.shape[0])
    whites = r.white_records
    assert len(whites) == 4
    for x, y in WHITES:  # each drawn cell inside exactly one box, boxes in the frame's own pixels
        inside = [c for c in whites if c.box[0] <= px(x) < c.box[2] and c.box[1] <= px(y) < c.box[3]]
        assert len(inside) == 1
    assert [c.state for c in whites] == ["not_blast"] * 3 + ["blast"]
    assert r.label == "Pre" and not r.abstained
    assert r.field_line == "4 white cells: 3 benigns (hematogones), 1 blast"
    assert r.differential is not None and r.differential.blasts == 1 and r.differential.counted == 4
    live = r.to_dict()
    assert live["frame_size"] == [img.shape[1], img.shape[0]]
    assert {tuple(c["box"]) for c in live["cells"]} == {c.box for c in r.records}
    assert {c["colour"] for c in live["cells"] if c["state"] == "blast"} == {"#D55E00"}


def test_unfamiliar_cells_are_unclassified_and_the_field_abstains(cell_ensemble, monkeypatch):
    rows = [(probs(Benign=0.99), [])] * 3 + [(probs(Benign=0.99), ["content unlike the training cells"])]
    stub(cell_ensemble, monkeypatch, rows)
    r = screen_frame(frame(), UM, cell_ensemble)
    assert [c.state for c in r.white_records] == ["not_blast"] * 3 + [UNCLASSIFIED]
    assert "content unlike" in (r.white_records[3].reason or "")
    assert r.abstained and r.reason == "1 of 4 white cells unclassified" and r.label == "Benign"


def test_a_frame_whose_red_cells_disagree_is_refused_before_detection(cell_ensemble, monkeypatch):
    stub(cell_ensemble, monkeypatch, [])  # no crop may reach the classifier
    r = screen_frame(frame(), 2 * UM, cell_ensemble)
    assert r.state == REFUSED and r.abstained and r.records == ()
    assert r.prepared.refused and "scale differs" in r.prepared.refused
    assert r.prepared.refusal_category == "scale_mismatch"


def test_a_frame_without_white_cells_is_no_cells(cell_ensemble, monkeypatch):
    stub(cell_ensemble, monkeypatch, [])
    r = CellScreen(cell_ensemble).screen(frame(whites=[]), "auto")
    assert r.state == NO_CELLS and r.differential is None and r.white_records == ()
    assert r.prepared.scale_source == "auto" and abs(r.prepared.um_per_px - UM) < 0.05 * UM


def cells(*states_labels: tuple[str, str | None]) -> list[CellRecord]:
    return [
        CellRecord(i, (0, 0, 1, 1), 0.0, 0.0, "white", st, lb, 0.95 if st == "blast" else 0.02)
        for i, (st, lb) in enumerate(states_labels)
    ]


ORDER = ["lymph", "neut", "blast_a", "blast_b"]


def test_label_rule_one_blast_wins_whatever_else_is_in_the_field():
    rec = cells(("not_blast", "lymph"), ("not_blast", "lymph"), ("blast", "blast_b"), ("unclassified", None))
    assert field_call(rec, ORDER)[:3] == ("blast_b", False, None)
    rec = cells(("blast", "blast_b"), ("blast", "blast_a"))  # a tie: the bundle's order
    assert field_call(rec, ORDER)[0] == "blast_a"


def test_label_rule_every_cell_read_gives_the_commonest_type():
    rec = cells(("not_blast", "neut"), ("not_blast", "lymph"), ("not_blast", "neut"))
    assert field_call(rec, ORDER)[:3] == ("neut", False, None)
    assert field_call(cells(("not_blast", None), ("not_blast", None)), ORDER)[0] == UNNAMED


def test_label_rule_unread_cells_abstain_with_the_count():
    rec = cells(("not_blast", "lymph"), ("unclassified", None), ("unclassified", None))
    assert field_call(rec, ORDER)[:3] == ("lymph", True, "2 of 3 white cells unclassified")
    assert field_call(cells(("unclassified", None)), ORDER)[:2] == (UNCLASSIFIED, True)


def test_field_line_reads_like_a_haematologist():
    labels = [
        {"id": "lymphocyte", "display": "Lymphocyte", "malignant": False},
        {"id": "blast_pre", "display": "Blast (pre-B ALL)", "malignant": True},
        {"id": "platelet", "display": "Platelet", "malignant": False, "white": False},
    ]
    d = differential(["lymphocyte"] * 5 + ["blast_pre"] * 2, labels)
    assert field_line(d) == "7 white cells: 5 lymphocytes, 2 blasts"
    d = differential(["lymphocyte"] * 2 + ["blast_pre"] * 2, labels)
    assert field_line(d) == "4 white cells: 2 blasts, 2 lymphocytes"  # a tie: blasts first
    d = differential(["lymphocyte", None, "platelet"], labels)
    assert field_line(d) == "2 white cells: 1 lymphocyte, 1 unclassified (not counted: 1 platelet)"


def test_cell_and_field_bundles_are_never_mixed(cell_ensemble, tiny_bundle):
    assert ensemble_kind(cell_ensemble) == CELLS
    field = Ensemble.from_dirs([str(tiny_bundle)], num_threads=1)
    assert ensemble_kind(field) == FIELD
    with pytest.raises(BundleError, match="mixes cell bundles"):
        ensemble_kind(Ensemble([*cell_ensemble.models, *field.models]))


def test_crops_equal_those_of_the_white_referenced_frame_even_at_its_edges(cell_ensemble):
    from device.cells.crop import model_input
    from device.cells.detect import WHITE, Cell
    from device.screening.classify import CellClassifier
    from device.screening.prepare import prepare_frame
    from device.screening.stages import ScreenSettings

    img = frame()
    img[..., 0] = np.clip(
        img[..., 0].astype(int) - 25, 0, 255
    )  # a bluish camera: the white reference matters
    prepared = prepare_frame(img, UM, ScreenSettings())
    assert prepared.white is not None
    whole = prepared.white.apply(img)
    clf = CellClassifier(cell_ensemble)
    h, w = img.shape[:2]
    for x, y in [(100.0, 80.0), (3.0, 5.0), (w - 2.0, h - 1.0), (w / 2, 0.0)]:
        cell = Cell(x, y, (0, 0, 1, 1), 50.0, 100.0, WHITE, 1.0, False)
        want = model_input(whole, cell, UM, size=64, input_um_per_px=0.375, pitch_um=0.479)
        assert np.array_equal(clf.crop(prepared, cell), want)


def test_a_frame_of_cells_is_one_batched_invoke_with_the_verdicts_of_single_ones(cell_ensemble):
    model = cell_ensemble.models[0]
    rng = np.random.default_rng(3)
    crops = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(5)]
    single = cell_ensemble.classify_tiles(crops, with_cam=False)
    before = model.invoke_ns
    batched = cell_ensemble.classify_tiles(crops, with_cam=False, batch=True)
    assert model._batch == 5  # the input held the 5 crops at once
    for a, b in zip(single, batched, strict=True):
        # the same int8 graph per image: outputs agree to within a few quantisation steps
        assert max(abs(a.probabilities[k] - b.probabilities[k]) for k in a.probabilities) <= 4 / 256
    assert model.invoke_ns > before
    assert cell_ensemble.classify_tiles(crops[:1])[0].labels == single[0].labels  # back to one input
    assert model._batch == 1


def test_bench_reports_each_part_as_a_ratio_to_the_inference(cell_ensemble, monkeypatch):
    from device.commands import _bench_cells
    from device.screening.stages import ScreenSettings

    monkeypatch.setattr(_bench_cells, "COUNTS", (5,))
    monkeypatch.setattr(_bench_cells, "compose", lambda n, um, seed: frame())  # 4 cells, 0.25 µm/px
    (row,) = _bench_cells.measure_frames(cell_ensemble, ScreenSettings(), um=UM, reps=1)
    assert row["white_cells_found"] == 4 and row["state"] == "counted"
    assert set(row["ms"]) == {"prepare", "detect", "crop", "infer", "result", "everything_else", "total"}
    assert row["ratio_to_inference"]["inference"] == 1.0
    assert set(row["ratio_to_inference"]) == {"detection", "inference", "everything_else"}


def test_bench_frames_hold_the_white_cells_asked_for():
    from device.cells.detect import detect_cells
    from device.commands._bench_cells import compose

    img = compose(5, size=(640, 360), um=0.19, seed=1)
    assert img.shape == (360, 640, 3)
    assert len([c for c in detect_cells(img, 0.19) if c.kind == "white"]) == 5
