"""device/cells/field: a field called from its white cells taken together (the bundle's field rule),
the record's label under it, the manifest keys, and the station's path using it (stubbed decisions)."""

from __future__ import annotations

import dataclasses
import json

import pytest
from make_tiny_bundle import make_cell_bundle
from test_screening import UM, frame, probs, stub

from device.cells.decide import BLAST, NOT_BLAST, UNCLASSIFIED
from device.cells.field import FieldEvidence, pool, pooled_verdict
from device.cells.record import CellRecord
from device.errors import BundleError
from device.models.bundle import CellSpec, Label, read_manifest
from device.models.ensemble import Ensemble
from device.screening.result import field_call
from device.screening.screen import screen_frame

LABELS = [
    Label("blast_pre", "Pre", True),
    Label("blast_pro", "Pro", True),
    Label("hematogone", "H", False),
    Label("lymphocyte", "L", False),
    Label("platelet", "P", False, white=False),
]
RULE = CellSpec(None, 0.95, 0.5, field_clear_threshold=0.4, field_blast_threshold=0.6, field_min_cells=3)


def test_pool_averages_the_blast_side_of_white_cells_only():
    cells = [
        {"blast_pre": 0.6, "blast_pro": 0.2, "hematogone": 0.2},
        {"blast_pre": 0.1, "hematogone": 0.5, "lymphocyte": 0.4},
        {"platelet": 0.9, "blast_pro": 0.1},  # a platelet the detector took for a white cell: left out
        {},  # no probabilities: left out
    ]
    ev = pool(cells, LABELS)
    assert ev is not None and ev.cells == 2
    assert ev.p_blast == pytest.approx((0.8 + 0.1) / 2)
    assert (ev.blast_label, ev.other_label) == ("blast_pre", "hematogone")
    assert pool([{"platelet": 1.0}], LABELS) is None and pool([], LABELS) is None


def test_pooled_verdict_calls_blast_clear_or_abstains_and_never_outvotes_a_decided_blast():
    def ev(p: float, n: int = 5) -> FieldEvidence:
        return FieldEvidence(n, p, "blast_pre", "hematogone")

    assert pooled_verdict(ev(0.6), RULE, 0).state == BLAST  # at the threshold
    assert pooled_verdict(ev(0.4), RULE, 0).state == NOT_BLAST
    between = pooled_verdict(ev(0.5), RULE, 0)
    assert between.state == UNCLASSIFIED and "between 0.40 and 0.60" in (between.reason or "")
    lone = pooled_verdict(ev(0.1), RULE, 1)
    assert lone.state == UNCLASSIFIED and "1 cell(s) decided a blast" in (lone.reason or "")
    assert pooled_verdict(ev(0.9, n=2), RULE, 0) is None  # too few cells
    assert pooled_verdict(ev(0.9), CellSpec(None, 0.95, 0.5), 0) is None  # no rule in the bundle
    assert pooled_verdict(None, RULE, 0) is None


def records(*states: tuple[str, str | None]) -> list[CellRecord]:
    return [CellRecord(i, (0, 0, 1, 1), 0.0, 0.0, "white", s, lb, 0.5) for i, (s, lb) in enumerate(states)]


def test_the_record_label_under_the_field_rule():
    order = [lb.id for lb in LABELS]
    ev = FieldEvidence(4, 0.8, "blast_pro", "hematogone")
    unread = records(*[(UNCLASSIFIED, None)] * 4)
    blast = pooled_verdict(ev, RULE, 0)
    assert field_call(unread, order, blast, ev)[:3] == ("blast_pro", False, None)
    some = records((BLAST, "blast_pre"), *[(UNCLASSIFIED, None)] * 3)
    # the subtype is the pooled cells' (blast_pro), not the one decided cell's
    assert field_call(some, order, pooled_verdict(ev, RULE, 1), ev)[0] == "blast_pro"
    clear_ev = dataclasses.replace(ev, p_blast=0.2)
    clear = pooled_verdict(clear_ev, RULE, 0)
    assert field_call(unread, order, clear, clear_ev)[:3] == ("hematogone", False, None)
    read = records((NOT_BLAST, "lymphocyte"), (NOT_BLAST, "lymphocyte"), (NOT_BLAST, "hematogone"))
    assert field_call(read, order, clear, clear_ev)[0] == "lymphocyte"  # every cell read: the commonest
    mid_ev = dataclasses.replace(ev, p_blast=0.5)
    label, abstained, reason, _ = field_call(unread, order, pooled_verdict(mid_ev, RULE, 0), mid_ev)
    assert (label, abstained) == (UNCLASSIFIED, True) and "between" in (reason or "")


def _with_rule(path, **cells) -> None:
    m = json.loads((path / "manifest.json").read_text())
    m["cells"].update(cells)
    (path / "manifest.json").write_text(json.dumps(m))


def test_manifest_field_rule_keys_are_checked(tmp_path):
    b = make_cell_bundle(tmp_path / "c")
    assert not read_manifest(b).cells.field_rule  # a bundle without the rule: cells decide the field
    _with_rule(b, field_clear_threshold=0.3, field_blast_threshold=0.7, field_min_cells=4)
    spec = read_manifest(b).cells
    assert spec.field_rule and (spec.field_clear_threshold, spec.field_blast_threshold) == (0.3, 0.7)
    assert spec.field_min_cells == 4
    for bad, match in [
        ({"field_clear_threshold": 0.8, "field_blast_threshold": 0.7}, "clear <= blast"),
        ({"field_clear_threshold": None, "field_blast_threshold": 0.7}, "go together"),
        ({"field_clear_threshold": 0.3, "field_blast_threshold": 0.7, "field_min_cells": 0}, "at least 1"),
        ({"field_clear_threshold": "x", "field_blast_threshold": 0.7}, "not a number"),
    ]:
        _with_rule(b, **bad)
        with pytest.raises(BundleError, match=match):
            read_manifest(b)


def test_the_station_calls_a_field_of_unclassified_cells_by_the_rule(tmp_path, monkeypatch):
    b = make_cell_bundle(tmp_path / "c")
    _with_rule(b, field_clear_threshold=0.3, field_blast_threshold=0.7, field_min_cells=3)
    ens = Ensemble.from_dirs([str(b)], num_threads=1)
    # every cell between the sides (blast_threshold 0.9): unclassified one by one, read with the field
    stub(ens, monkeypatch, [(probs(Benign=0.8, Pre=0.2), [])] * 4)
    r = screen_frame(frame(), UM, ens)
    assert (r.label, r.abstained) == ("Benign", False)  # the field: mean blast probability 0.2 <= 0.3
    assert [(c.state, c.label) for c in r.white_records] == [("not_blast", "Benign")] * 4
    assert all("read with its field" in (c.reason or "") for c in r.white_records)
    assert r.differential.counted == 4 and r.differential.unclassified == 0
    stub(ens, monkeypatch, [(probs(Benign=0.2, Pro=0.8), [])] * 4)
    r = screen_frame(frame(), UM, ens)
    assert (r.label, r.abstained) == ("Pro", False) and r.differential.blasts == 4
    # a cell leaning against its field stays unclassified: mean (0.8 x 3 + 0.4) / 4 = 0.7 >= 0.7
    stub(ens, monkeypatch, [(probs(Benign=0.2, Pro=0.8), [])] * 3 + [(probs(Benign=0.6, Pro=0.4), [])])
    r = screen_frame(frame(), UM, ens)
    assert [c.state for c in r.white_records] == ["blast"] * 3 + [UNCLASSIFIED]
    assert r.differential.blasts == 3 and r.differential.unclassified == 1
    stub(ens, monkeypatch, [(probs(Benign=0.5, Pre=0.5), [])] * 4)
    assert screen_frame(frame(), UM, ens).abstained
    # unfamiliar cells are not pooled: three left of four is still enough, one is not
    odd = ["content unlike the training cells"]
    stub(ens, monkeypatch, [(probs(Benign=0.8, Pre=0.2), [])] * 3 + [(probs(Pre=1.0), odd)])
    assert not screen_frame(frame(), UM, ens).abstained
    stub(ens, monkeypatch, [(probs(Benign=0.8, Pre=0.2), [])] + [(probs(Pre=1.0), odd)] * 3)
    assert screen_frame(frame(), UM, ens).abstained
