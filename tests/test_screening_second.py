"""The field models' second reading of a field the cells leave uncertain (device/screening/second.py)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from types import SimpleNamespace

import pytest
from make_tiny_bundle import make_cell_bundle
from test_screening import UM, WHITES, frame, probs, stub

from device.cells.count import UNCLASSIFIED
from device.config import load_config
from device.errors import BundleError
from device.models.ensemble import Ensemble, Prediction
from device.optics.field import FieldResult
from device.screening.screen import CellScreen
from device.screening.second import (
    MALIGNANT,
    NOT_MALIGNANT,
    NOT_READ,
    FieldReader,
    SecondReading,
    load_reader,
    reader_dirs,
)
from device.screening.stages import COUNTED


class Reader:
    """A second reader answering `state` (a stand-in for the field models, counting its reads)."""

    def __init__(self, state: str, label: str | None = "Pre", leaning: str | None = None):
        self.state, self.label, self.leaning, self.reads = state, label, leaning, 0
        self.ensemble = SimpleNamespace(names=["field-a", "field-b"])

    def read(self, field):
        self.reads += 1
        why = "field models: uncertain" if self.state == NOT_READ else None
        return SecondReading(
            ("field-a", "field-b"), self.state, self.label, self.label, 0.97, why, leaning=self.leaning
        )


@pytest.fixture(scope="module")
def cell_ensemble(tmp_path_factory) -> Ensemble:
    return Ensemble.from_dirs([str(make_cell_bundle(tmp_path_factory.mktemp("b") / "cells"))], num_threads=1)


def screen(ensemble, reader, *, field_rule: bool = False) -> CellScreen:
    s = CellScreen(ensemble, reader=reader)
    if field_rule:
        s.classifier.spec = dataclasses.replace(
            s.classifier.spec, field_clear_threshold=0.3, field_blast_threshold=0.7, field_min_cells=3
        )
    return s


# three cells read as hematogones (here "Benign"), one the model cannot decide
UNDECIDED = [(probs(Benign=0.98, Pre=0.02), [])] * 3 + [(probs(Benign=0.5, Pre=0.3, Early=0.2), [])]


def test_a_malignant_reading_calls_an_uncertain_field_a_blast_field_and_leaves_the_count(
    cell_ensemble, monkeypatch
):
    stub(cell_ensemble, monkeypatch, UNDECIDED)
    alone = CellScreen(cell_ensemble).screen(frame(), UM)
    assert alone.state == COUNTED and alone.abstained
    reader = Reader(MALIGNANT)
    r = screen(cell_ensemble, reader).screen(frame(), UM)
    assert reader.reads == 1
    assert not r.abstained and r.reason is None
    assert r.label == "Pre"  # the cells' blast label of the highest mean probability, not the reader's
    assert r.second is not None and r.second.decided and r.second.label == "Pre"
    # the cells are counted as they were read: the reading names the field, not its cells
    assert r.records == alone.records and r.differential == alone.differential
    assert r.to_dict()["second_reading"]["decided"] is True


def test_a_clear_reading_clears_an_uncertain_field_without_a_decided_blast(cell_ensemble, monkeypatch):
    stub(cell_ensemble, monkeypatch, UNDECIDED)
    r = screen(cell_ensemble, Reader(NOT_MALIGNANT, "Benign")).screen(frame(), UM)
    assert not r.abstained and r.label == "Benign"
    assert r.second is not None and r.second.decided


def test_a_clear_reading_never_outvotes_a_decided_blast(cell_ensemble, monkeypatch):
    # the field rule abstains on a field of a decided blast and a low mean; the reader may not clear it
    rows = [(probs(Benign=0.99, Pre=0.01), [])] * 3 + [(probs(Pre=0.95, Benign=0.05), [])]
    stub(cell_ensemble, monkeypatch, rows)
    s = screen(cell_ensemble, Reader(NOT_MALIGNANT, "Benign"), field_rule=True)
    r = s.screen(frame(), UM)
    assert r.abstained
    assert r.second is not None and not r.second.decided
    assert "decided a blast" in (r.second.reason or "")


def test_a_clear_reading_never_clears_cells_whose_mean_reaches_the_blast_threshold(
    cell_ensemble, monkeypatch
):
    # two cells (too few for the field rule), both leaning blast but below the cell's blast threshold
    stub(cell_ensemble, monkeypatch, [(probs(Pre=0.8, Benign=0.2), [])] * 2)
    reader = Reader(NOT_MALIGNANT, "Benign")
    r = screen(cell_ensemble, reader, field_rule=True).screen(frame(whites=WHITES[:2]), UM)
    assert reader.reads == 1 and r.abstained
    assert r.second is not None and not r.second.decided
    assert "mean blast probability 0.80 reaches 0.70" in (r.second.reason or "")


def test_a_field_the_rule_calls_is_not_read_again(cell_ensemble, monkeypatch):
    stub(cell_ensemble, monkeypatch, [(probs(Pre=0.74, Benign=0.26), [])] * 4)
    reader = Reader(NOT_MALIGNANT, "Benign")
    r = screen(cell_ensemble, reader, field_rule=True).screen(frame(), UM)
    assert not r.abstained and r.label == "Pre" and r.second is None and reader.reads == 0


def test_an_unsure_or_refusing_reader_leaves_the_field_uncertain(cell_ensemble, monkeypatch):
    stub(cell_ensemble, monkeypatch, UNDECIDED)
    r = screen(cell_ensemble, Reader(NOT_READ, None)).screen(frame(), UM)
    assert r.abstained and r.reason == "1 of 4 white cells unclassified"
    assert r.second is not None and r.second.state == NOT_READ and not r.second.decided


def test_two_readers_leaning_blast_call_a_small_field_a_blast_field(cell_ensemble, monkeypatch):
    # two cells leaning blast (mean 0.85 >= 0.7) but undecided; the field models unsure, leaning malignant
    stub(cell_ensemble, monkeypatch, [(probs(Pre=0.85, Benign=0.15), [])] * 2)
    r = screen(cell_ensemble, Reader(NOT_READ, "Pre", MALIGNANT), field_rule=True).screen(
        frame(whites=WHITES[:2]), UM
    )
    assert not r.abstained and r.label == "Pre"
    assert r.second is not None and r.second.decided and "both readers lean blast" in r.second.reason
    # ... but not when the cells do not lean blast far enough, nor when the field models lean benign
    stub(cell_ensemble, monkeypatch, [(probs(Pre=0.6, Benign=0.4), [])] * 2)
    r = screen(cell_ensemble, Reader(NOT_READ, "Pre", MALIGNANT), field_rule=True).screen(
        frame(whites=WHITES[:2]), UM
    )
    assert r.abstained and not r.second.decided
    stub(cell_ensemble, monkeypatch, [(probs(Pre=0.85, Benign=0.15), [])] * 2)
    r = screen(cell_ensemble, Reader(NOT_READ, "Benign", NOT_MALIGNANT), field_rule=True).screen(
        frame(whites=WHITES[:2]), UM
    )
    assert r.abstained and not r.second.decided


def test_a_field_the_cells_called_is_not_read_again(cell_ensemble, monkeypatch):
    stub(cell_ensemble, monkeypatch, [(probs(Benign=0.99, Pre=0.01), [])] * 4)
    reader = Reader(MALIGNANT)
    r = screen(cell_ensemble, reader).screen(frame(), UM)
    assert not r.abstained and r.label == "Benign" and reader.reads == 0 and r.second is None


def test_a_field_of_only_unclassified_cells_cleared_gets_a_white_type_not_unclassified(
    cell_ensemble, monkeypatch
):
    stub(cell_ensemble, monkeypatch, [(probs(Benign=0.6, Pre=0.4), ["content unlike"])] * 4)
    r = screen(cell_ensemble, Reader(NOT_MALIGNANT, "Benign")).screen(frame(), UM)
    assert not r.abstained and r.label == "Benign" and r.label != UNCLASSIFIED


def test_the_field_reader_reads_with_real_field_models(tiny_bundle, cell_ensemble, monkeypatch):
    stub(cell_ensemble, monkeypatch, UNDECIDED)
    reader = FieldReader(Ensemble.from_dirs([str(tiny_bundle)], num_threads=1))
    r = screen(cell_ensemble, reader).screen(frame(), UM)
    assert r.second is not None and r.second.models == tuple(reader.ensemble.names)
    assert r.second.state in (MALIGNANT, NOT_MALIGNANT, NOT_READ) and r.second.ms > 0
    if r.second.state == NOT_READ:
        assert r.abstained and r.second.reason.startswith("field models:")
    copy = reader.copy(threads=1)
    assert copy.ensemble is not reader.ensemble and copy.ensemble.names == reader.ensemble.names


def test_a_cell_bundle_cannot_be_a_second_reader(cell_ensemble):
    with pytest.raises(BundleError, match="field bundles"):
        FieldReader(cell_ensemble)


def _models(tmp_path, tiny_bundle):
    """A models dir: a cell bundle as the default ensemble, the tiny field bundle as its second reader."""
    root = tmp_path / "models"
    root.mkdir()
    make_cell_bundle(root / "cells")
    shutil.copytree(tiny_bundle, root / "field")
    (root / "DEFAULT").write_text("cells\n")
    (root / "SECOND_READING").write_text("# the field models\nfield\n")
    return root


def test_the_second_reader_pairs_with_the_shipped_cell_ensemble_only(tmp_path, tiny_bundle, monkeypatch):
    root = _models(tmp_path, tiny_bundle)
    monkeypatch.setenv("SMEARSCOPE_MODELS_DIR", str(root))
    config = load_config(system_config=None, env={})
    assert reader_dirs(config, [root / "cells"]) == [root / "field"]
    reader = load_reader(config, [str(root / "cells")])
    assert reader is not None and reader.ensemble.names == ["tiny-mobilenetv2-int8"]
    other = make_cell_bundle(tmp_path / "clinic-cells")
    assert reader_dirs(config, [other]) == []  # a clinic's own cell bundle: no pairing assumed
    off = load_config(system_config=None, env={}, overrides={"cells": {"second_reading": False}})
    assert reader_dirs(off, [root / "cells"]) == [] and load_reader(off, [root / "cells"]) is None
    named = load_config(
        system_config=None, env={}, overrides={"cells": {"second_reading_models": [str(root / "field")]}}
    )
    assert reader_dirs(named, [other]) == [root / "field"]


def test_a_second_reader_must_be_a_signed_field_bundle(tmp_path, tiny_bundle, monkeypatch):
    root = _models(tmp_path, tiny_bundle)
    monkeypatch.setenv("SMEARSCOPE_MODELS_DIR", str(root))
    config = load_config(system_config=None, env={})
    manifest = root / "field" / "manifest.json"
    m = json.loads(manifest.read_text())
    m["version"] = "9.9.9"  # changed after signing
    manifest.write_text(json.dumps(m))
    with pytest.raises(BundleError):
        load_reader(config, [root / "cells"])
    (root / "SECOND_READING").write_text("cells\n")
    with pytest.raises(BundleError, match="field bundles"):
        load_reader(config, [root / "cells"])
    (root / "SECOND_READING").write_text("missing\n")
    with pytest.raises(BundleError, match="no bundle"):
        load_reader(config, [root / "cells"])


def _tile(label: str, p: float, abstained: bool = False) -> Prediction:
    rest = (1 - p) / 3
    probabilities = {lb: (p if lb == label else rest) for lb in ("Benign", "Early", "Pre", "Pro")}
    return Prediction(list(probabilities), probabilities, label, p, abstained)


def _analysis(tiles: list[Prediction], state: str, label: str | None, abstained: bool, reason=None):
    probabilities = {lb: sum(t.probabilities[lb] for t in tiles) / len(tiles) for lb in tiles[0].labels}
    fr = FieldResult(state, label, 0.9, probabilities, abstained, reason, tiles)
    return SimpleNamespace(field=fr, prediction=fr.to_prediction(list(probabilities)))


@pytest.mark.parametrize(
    ("tiles", "state", "label", "abstained", "expected", "leaning"),
    [
        # malignant in every confident tile, two subtypes: the field rule abstains, the reading is malignant
        ([_tile("Pre", 0.97), _tile("Early", 0.95)], "uncertain", "Pre", True, MALIGNANT, None),
        (
            [_tile("Pro", 0.97), _tile("Benign", 0.6, abstained=True)],
            "classified",
            "Pro",
            False,
            MALIGNANT,
            None,
        ),
        ([_tile("Benign", 0.99), _tile("Benign", 0.98)], "classified", "Benign", False, NOT_MALIGNANT, None),
        # benign and malignant tiles: not read; it leans by the mean malignant probability
        (
            [_tile("Benign", 0.99), _tile("Benign", 0.98), _tile("Pre", 0.9)],
            "uncertain",
            "Pre",
            True,
            NOT_READ,
            NOT_MALIGNANT,
        ),
        ([_tile("Benign", 0.9), _tile("Pre", 0.99)], "uncertain", "Pre", True, NOT_READ, MALIGNANT),
        ([_tile("Pre", 0.9, abstained=True)], "uncertain", "Pre", True, NOT_READ, MALIGNANT),
    ],
)
def test_the_field_reader_reads_malignant_tiles_whatever_their_subtype(
    tiny_bundle, monkeypatch, tiles, state, label, abstained, expected, leaning
):
    reader = FieldReader(Ensemble.from_dirs([str(tiny_bundle)], num_threads=1))
    monkeypatch.setattr(
        reader.classifier, "analyse", lambda *a, **k: _analysis(tiles, state, label, abstained)
    )
    field = SimpleNamespace(prepared=SimpleNamespace(image=frame(), um_per_px=UM))
    got = reader.read(field)  # type: ignore[arg-type]
    assert (got.state, got.leaning) == (expected, leaning)


def test_evaluate_reports_what_the_second_reading_called(cell_ensemble, monkeypatch, tmp_path):
    from test_cells_cli import write

    from device.screening.evaluate import evaluate_fields

    data = tmp_path / "fields"
    write(data / "Benign" / "b.png", frame())
    write(data / "Pre" / "p.png", frame())
    stub(cell_ensemble, monkeypatch, UNDECIDED)  # every field uncertain by its cells
    s = screen(cell_ensemble, Reader(MALIGNANT))
    m = evaluate_fields(s, data, scale=UM, malignant=["Pre"], progress=False)
    assert m["right"] == 1 and m["confidently_wrong"] == 1  # the reading's call is judged as the station's
    assert m["second_reading"] == {
        "models": ["field-a", "field-b"],
        "read": 2,
        "called": 2,
        "called_right": 1,
        "called_wrong": 1,
    }
    assert {im["second"] for im in m["images"]} == {"called"}


def test_the_record_page_says_the_second_reading_called_the_field(app_svc, client):
    from test_store_cells import cell, cells_record

    _, services = app_svc
    reading = SecondReading(("field-a",), MALIGNANT, "Pre", "Pre-B ALL (malignant)", 0.97, None, decided=True)
    quality = {"ok": True, "differential": None, "second_reading": reading.to_dict()}
    rec = services.store.add_result(cells_record(label="blast_b", quality=quality), cells=[cell(0)])
    html = client.get(f"/results/{rec['id']}").get_data(as_text=True)
    assert "Called by the second reading" in html and "Pre-B ALL (malignant)" in html
    unread = SecondReading(("field-a",), NOT_READ, None, None, 0.0, "field models: unfamiliar")
    quality = {"ok": True, "differential": None, "second_reading": unread.to_dict()}
    rec = services.store.add_result(cells_record(quality=quality), cells=[cell(0)])
    html = client.get(f"/results/{rec['id']}").get_data(as_text=True)
    assert "did not call this field either" in html and "field models: unfamiliar" in html
