"""training/cells/calibrate_cells: the thresholds it picks meet stated targets on a synthetic table of
probabilities (no model, no ../shared), and the bundle's manifest gets them."""

from __future__ import annotations

import numpy as np
import pytest

from device.models.bundle import CellSpec, Label
from training.cells.calibrate_cells import (
    CellSet,
    Targets,
    blast_rates,
    choose_blast_threshold,
    choose_type_threshold,
    decisions,
)
from training.cells.cellprobs import CellTable

LABELS = [
    Label("blast_pre", "Blast", True),
    Label("hematogone", "Hematogone", False),
    Label("lymphocyte", "Lymphocyte", False),
]
IDS = [lb.id for lb in LABELS]


def table(rows: list[tuple[float, float, float]], unfamiliar=None) -> CellTable:
    probs = np.array(rows, np.float64)
    return CellTable(IDS, probs, {}, unfamiliar or [None] * len(rows))


def blast_set() -> CellSet:
    """100 blasts and 100 normal cells; p_blast known per cell. 5 normal cells have p_blast 0.80 (wrong at
    any threshold <= 0.80), 2 have 0.93; every blast has p_blast 0.97 except 3 at 0.15."""
    rows, truth = [], []
    for i in range(100):
        p = 0.15 if i < 3 else 0.97
        rows.append((p, 1 - p, 0.0))
        truth.append("blast_pre")
    for i in range(100):
        p = 0.80 if i < 5 else (0.93 if i < 7 else 0.02)
        lab = "lymphocyte" if i % 2 else "hematogone"
        rows.append((p, (1 - p) / 2, (1 - p) / 2) if lab == "hematogone" else (p, 0.0, 1 - p))
        truth.append(lab)
    return CellSet("original", table(rows), truth, ["ball"] * 200)


def test_blast_threshold_is_the_smallest_that_meets_the_targets():
    s = blast_set()
    targets = Targets(0.05, 0.05, 0.05, max_blast_on_decided_normal=0.05, margin=1.0)
    t, met, rates = choose_blast_threshold([s], LABELS, targets)
    # <= 0.80: 7 normal cells are blasts (7%); 0.85..0.93: 2 (2%) and 3 blasts missed: met first at 0.85
    assert met and t == pytest.approx(0.85)
    r = rates["original"]
    assert r["confident_blast_on_normal"] == pytest.approx(0.02)
    assert r["blast_called_not_blast"] == pytest.approx(0.03)
    assert r["confidently_wrong"] <= targets.max_wrong
    # a stricter limit on blasts among normal cells needs a threshold above 0.93
    strict = Targets(0.05, 0.01, 0.05, max_blast_on_decided_normal=0.05, margin=1.0)
    t2, met2, _ = choose_blast_threshold([s], LABELS, strict)
    assert met2 and t2 > 0.93
    # the specificity among DECIDED cells: at 0.85-0.93, 2 blasts among 95 decided normal cells (2.1%)
    decided = Targets(0.05, 0.05, 0.05, max_blast_on_decided_normal=0.01, margin=1.0)
    t5, met5, r5 = choose_blast_threshold([s], LABELS, decided)
    assert r["blast_on_decided_normal"] == pytest.approx(2 / 95)
    assert met5 and t5 > 0.93 and r5["original"]["blast_on_decided_normal"] == 0.0
    # the margin asks for room: 3% missed blasts is within 5% but not within 0.5 x 5%, so the threshold
    # rises until those blasts (p_blast 0.15: 0.85 not a blast) are unclassified instead
    t3, met3, r3 = choose_blast_threshold([s], LABELS, Targets(0.05, 0.05, 0.05, 0.05, margin=0.5))
    assert met3 and t3 == pytest.approx(0.9) and r3["original"]["blast_called_not_blast"] == 0.0
    # a target no threshold meets: the most cautious threshold, reported as not met
    t4, met4, _ = choose_blast_threshold([s], LABELS, Targets(0.0, 0.0, 0.0, margin=1.0), grid=(0.6, 0.7))
    assert not met4 and t4 == 0.7


def test_a_cross_lab_copy_can_raise_the_threshold():
    s = blast_set()
    copy = blast_set()
    copy.name = "colour_to_other"
    copy.table.probs[100:110, 0] = 0.955  # ten normal cells look like blasts in the other lab's colour
    copy.table.probs[100:110, 1:] = 0.045 / 2
    targets = Targets(0.05, 0.05, 0.05, max_blast_on_decided_normal=0.05, margin=1.0)
    t, met, rates = choose_blast_threshold([s, copy], LABELS, targets)
    assert met and t > 0.955 and rates["colour_to_other"]["confident_blast_on_normal"] <= 0.05


def test_unfamiliar_cells_are_never_decided():
    s = blast_set()
    s.table.unfamiliar[:] = ["input unlike the training images (x)"] * 200
    r = blast_rates(s, decisions(s.table, LABELS, CellSpec(None, 0.6, 0.5)), LABELS)
    assert r["unclassified"] == 1.0 and r["confidently_wrong"] == 0.0


def test_type_threshold_keeps_each_type_mostly_named():
    # lymphocytes named with share 0.9 (8 cells) or 0.7 (2 cells); hematogones with 0.95 (10 cells)
    rows = [(0.0, 0.1, 0.9)] * 8 + [(0.0, 0.3, 0.7)] * 2 + [(0.0, 0.95, 0.05)] * 10
    truth = ["lymphocyte"] * 10 + ["hematogone"] * 10
    s = CellSet("original", table(rows), truth, ["pbc"] * 10 + ["ball"] * 10)
    t, rates = choose_type_threshold(s, LABELS, 0.9, Targets(max_unnamed=0.2))
    # up to 0.7 every cell is named; above it 2 of 10 lymphocytes (20%) are unnamed: still allowed, up
    # to 0.9; above 0.9 all lymphocytes are unnamed
    assert t == pytest.approx(0.9)
    assert rates["lymphocyte"]["unnamed"] == pytest.approx(0.2) and rates["hematogone"]["unnamed"] == 0.0
    t_low, _ = choose_type_threshold(s, LABELS, 0.9, Targets(max_unnamed=0.1))
    assert t_low == pytest.approx(0.7)
