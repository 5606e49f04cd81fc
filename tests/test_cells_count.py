"""device.cells.count: the differential, the blast share's exact interval and the slide call."""

from __future__ import annotations

import pytest

from device.cells.count import (
    COUNT_MORE,
    NO_BLASTS_SEEN,
    SUSPICIOUS,
    UNCLASSIFIED,
    blast_interval,
    differential,
    label_infos,
)
from device.models.bundle import Label

# a bundle-like label list: ids and blast flags come from the manifest, never from the code
LABELS = [
    {"id": "lymphocyte", "display": "Lymphocyte", "malignant": False},
    {"id": "neutrophil", "display": "Neutrophil", "malignant": False},
    {"id": "Pre", "display": "Pre-B lymphoblast", "malignant": True},
    {"id": "Pro", "display": "Pro-B lymphoblast", "blast": True},
    {"id": "platelet", "display": "Platelet", "malignant": False, "white": False},
]


@pytest.mark.parametrize(
    "k, n, low, high",
    [  # Clopper-Pearson two-sided 95% (published tables; e.g. 0/100 -> 3.62%, the "rule of 3.7")
        (0, 100, 0.0, 0.03622),
        (5, 100, 0.01643, 0.11283),
        (10, 100, 0.04900, 0.17622),
        (1, 10, 0.00253, 0.44502),
        (0, 200, 0.0, 0.01828),
    ],
)
def test_blast_interval_is_clopper_pearson(k, n, low, high):
    lo, hi = blast_interval(k, n)
    assert lo == pytest.approx(low, abs=5e-5)
    assert hi == pytest.approx(high, abs=5e-5)


def test_counts_per_type_in_bundle_order():
    d = differential(["lymphocyte"] * 3 + ["neutrophil"] * 5 + ["Pre"] * 2 + ["platelet"], LABELS)
    assert [(c.id, c.n) for c in d.counts] == [("lymphocyte", 3), ("neutrophil", 5), ("Pre", 2), ("Pro", 0)]
    assert [(c.id, c.n) for c in d.others] == [("platelet", 1)]  # named, never counted as a white cell
    assert d.counted == 10 and d.blasts == 2 and d.blast_fraction == pytest.approx(0.2)


def test_no_blasts_seen_when_the_target_is_reached():
    d = differential(["lymphocyte"] * 60 + ["neutrophil"] * 40, LABELS, target=100)
    assert d.call == NO_BLASTS_SEEN
    assert d.call_text == "no blasts seen in 100 white cells (upper 95% bound 3.6%)"
    assert d.ci_high == pytest.approx(0.03622, abs=5e-5)
    assert "100" in d.rule and "not a diagnosis" in d.rule


def test_count_more_below_the_target():
    d = differential(["lymphocyte"] * 40, LABELS, target=100)
    assert d.call == COUNT_MORE and d.call_text == "count more cells: 40 of 100"
    assert differential([], LABELS).call_text == "count more cells: 0 of 100"
    assert differential(["neutrophil"] * 30, LABELS, target=30).call == NO_BLASTS_SEEN  # configurable target


def test_suspicious_when_the_interval_is_clearly_above_the_threshold():
    # 10 / 100: 95% CI 4.9-17.6% -> clearly above 2%, not clearly above 5%
    cells = ["lymphocyte"] * 90 + ["Pre"] * 10
    d = differential(cells, LABELS, threshold=0.02)
    assert d.call == SUSPICIOUS and d.call_text.startswith("suspicious — refer: 10 blasts in 100 white cells")
    d = differential(cells, LABELS, threshold=0.05)
    assert d.call == COUNT_MORE and d.call_text.startswith("count more cells: 100 of 200 (10 blasts")
    # before the target too: 8 of 10 cells are blasts (CI 44-97%)
    assert differential(["Pro"] * 8 + ["lymphocyte"] * 2, LABELS).call == SUSPICIOUS


def test_two_subtypes_are_still_blasts():
    d = differential(["Pre"] * 3 + ["Pro"] * 3 + ["lymphocyte"] * 4, LABELS)
    assert d.blasts == 6
    assert [(c.id, c.n) for c in d.blast_types] == [("Pre", 3), ("Pro", 3)]
    assert d.call == SUSPICIOUS  # 6/10, lower bound 26%


def test_unclassified_counted_apart_and_never_dropped():
    d = differential(["lymphocyte"] * 100 + [None] * 4 + [UNCLASSIFIED] * 3, LABELS)
    assert d.unclassified == 7 and d.counted == 100
    assert d.call == NO_BLASTS_SEEN and d.call_text.endswith("; 7 unclassified")
    # too many unclassified cells could hide blasts: no "no blasts seen" call
    d = differential(["lymphocyte"] * 100 + [None] * 20, LABELS, max_unclassified=0.1)
    assert d.call == COUNT_MORE and "20 of 120 white cells unclassified" in d.call_text


def test_labels_read_from_bundle_label_objects():
    labels = [Label("Benign", "Benign", False), Label("Early", "Early pre-B ALL", True)]
    d = differential(["Benign", "Early"], labels)
    assert [(c.id, c.blast) for c in d.counts] == [("Benign", False), ("Early", True)]
    assert d.blasts == 1


def test_undeclared_or_unknown_labels_are_refused():
    with pytest.raises(ValueError, match="blast"):
        label_infos([{"id": "x", "display": "x"}])  # no blast/malignant flag: never guessed
    with pytest.raises(ValueError, match="not one of"):
        differential(["monocyte"], LABELS)
    with pytest.raises(ValueError, match="reserved"):
        label_infos([{"id": UNCLASSIFIED, "malignant": False}])
    with pytest.raises(ValueError):
        differential([], LABELS, threshold=5)


def test_unclassified_shown_while_counting():
    d = differential(["lymphocyte"] * 30 + [None] * 2, LABELS)
    assert d.call == COUNT_MORE and d.call_text == "count more cells: 30 of 100; 2 unclassified"


def test_one_blast_in_a_hundred_asks_for_more_cells():
    d = differential(["lymphocyte"] * 99 + ["Pro"], LABELS)
    assert d.call == COUNT_MORE
    assert (
        d.call_text == "count more cells: 100 of 200 (1 blast, 1.0%, 95% CI 0.0%–5.4%: not clearly above 2%)"
    )
