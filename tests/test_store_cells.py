"""Per-cell records in the station's store: written with their record in one transaction, carried by
the record JSON (get, lists, exports' queries, the sync payload), reviewed one by one, and a review
sent to the hub exactly once more."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from device.cells.record import NOT_A_CELL, CellRecord
from device.store import Store, StoreError
from device.store import cells as cells_sql
from device.store.db import _statements
from device.store.migrations import MIGRATIONS
from device.sync.outbox import Outbox

REPO = Path(__file__).resolve().parents[1]

LABELS = [
    {"id": "lymphocyte", "display": "Lymphocyte", "blast": False, "n": 0},
    {"id": "neutrophil", "display": "Neutrophil", "blast": False, "n": 0},
    {"id": "blast_b", "display": "B blast", "blast": True, "n": 0},
]
OTHERS = [{"id": "platelet", "display": "Platelet", "blast": False, "n": 0}]
PROBS = {"lymphocyte": 0.9, "neutrophil": 0.05, "blast_b": 0.03, "platelet": 0.02}


def cell(i: int, state: str = "not_blast", label: str | None = "lymphocyte", **kw) -> CellRecord:
    x0, y0 = 10 + 40 * i, 20
    base = dict(
        index=i, box=(x0, y0, x0 + 30, y0 + 30), x=x0 + 15.0, y=y0 + 15.0, kind="white", state=state,
        label=label, p_blast=0.9 if state == "blast" else 0.03, probabilities=dict(PROBS),
        reason="type unsure" if state == "unclassified" else None,
    )  # fmt: skip
    base.update(kw)
    return CellRecord(**base)


def cells_record(sample_id: str | None = None, **kw) -> dict:
    r = {
        "source": "camera",
        "kind": "cells",
        "label": "lymphocyte",
        "confidence": 0.9,
        "probabilities": {},
        "quality": {"ok": True, "differential": {"counts": LABELS, "others": OTHERS}},
        "models": [{"name": "cells-tiny", "sha256": "ab" * 32}],
        "sample_id": sample_id,
    }
    r.update(kw)
    return r


@pytest.fixture()
def store(tmp_path):
    s = Store(tmp_path / "data", reserve_bytes=0)
    yield s
    s.close()


def test_round_trip_of_a_record_with_cells(store):
    cells = [cell(0), cell(1, "blast", "blast_b"), cell(2, "unclassified", None)]
    stored = store.add_result(cells_record(), cells=cells)
    assert [CellRecord.from_dict(c) for c in stored["cells"]] == cells
    got = store.get_result(stored["id"])
    assert got["kind"] == "cells"
    assert got["cells"] == [c.to_dict() for c in cells]
    assert store.list_results(kind="cells")[0]["cells"] == got["cells"]
    assert store.record_cells(stored["id"]) == cells
    # a record without cells carries an empty list
    plain = store.add_result({"source": "upload", "label": "Pre", "probabilities": {"Pre": 1.0}})
    assert plain["cells"] == [] and store.get_result(plain["id"])["cells"] == []


def test_cells_are_refused_with_a_clear_error(store):
    with pytest.raises(StoreError, match="twice"):
        store.add_result(cells_record(), cells=[cell(0), cell(0)])
    with pytest.raises(StoreError, match="only a 'cells' record"):
        store.add_result({"source": "camera", "label": "Pre"}, cells=[cell(0)])
    with pytest.raises(StoreError, match="finite"):
        store.add_result(cells_record(), cells=[cell(0, p_blast=float("nan"))])
    assert store.conn.execute("SELECT count(*) FROM results").fetchone()[0] == 0


def test_a_failure_while_writing_cells_leaves_no_record(store, monkeypatch):
    def half(conn, record_id, cells):
        conn.execute(
            "INSERT INTO cells (record_id, cell_index, x0, y0, x1, y1, x, y, kind, state) "
            "VALUES (?, 0, 0, 0, 1, 1, 0, 0, 'white', 'blast')",
            (record_id,),
        )
        raise sqlite3.OperationalError("disk I/O error")

    sha, size = store.write_image(b"\xff\xd8 frame \xff\xd9")
    monkeypatch.setattr(cells_sql, "insert_cells", half)
    with pytest.raises(sqlite3.OperationalError):
        store.add_result(cells_record(image_sha256=sha), images=[(sha, size)], cells=[cell(0), cell(1)])
    for table in ("results", "cells", "images"):
        assert store.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0


WRITER = textwrap.dedent(
    """
    import os, sys
    from device.cells.record import CellRecord
    from device.store import Store
    s = Store(sys.argv[1], reserve_bytes=0)
    i = 0
    while True:
        n = 1 + i % 40
        cells = [CellRecord(k, (k, 0, k + 5, 5), k + 2.5, 2.5, "white", "not_blast", "lymphocyte", 0.01,
                            {"lymphocyte": 0.99, "blast_b": 0.01}) for k in range(n)]
        sha, size = s.write_image(os.urandom(2000 + i % 3000))
        s.add_result({"source": "camera", "kind": "cells", "label": "lymphocyte", "image_sha256": sha,
                      "confidence": float(n)}, images=[(sha, size)], cells=cells)
        if i == 0:
            print("ready", flush=True)
        i += 1
    """
)


def test_kill_9_while_writing_cells_leaves_whole_records(tmp_path):
    data = tmp_path / "data"
    rng = random.Random(25)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for _ in range(6):
        p = subprocess.Popen([sys.executable, "-c", WRITER, str(data)], stdout=subprocess.PIPE, env=env)
        try:
            assert p.stdout.readline().strip() == b"ready"
            time.sleep(rng.uniform(0.05, 0.3))
        finally:
            p.send_signal(signal.SIGKILL)
            p.wait(10)
    s = Store(data, temps_older_than_s=0)
    assert s.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = s.conn.execute("SELECT id, confidence FROM results").fetchall()
    assert len(rows) >= 6
    have = dict(s.conn.execute("SELECT record_id, count(*) FROM cells GROUP BY record_id").fetchall())
    assert {rid: int(n) for rid, n in rows} == have  # every record has all its cells, no cell is orphaned
    s.close()


def test_review_cell_valid_invalid_and_counted_after_finish(store):
    sample = store.open_sample("LAB-25", user="ann")
    rec = store.add_result(cells_record(sample["id"]), cells=[cell(0), cell(1, "blast", "blast_b")])
    reviewed = store.review_cell(rec["id"], 1, "lymphocyte", "bob")
    assert reviewed.reviewed_label == "lymphocyte" and reviewed.reviewer == "bob" and reviewed.reviewed_at
    assert reviewed.state == "blast"  # the classifier's decision is kept beside the review
    assert store.get_result(rec["id"])["cells"][1]["reviewed_label"] == "lymphocyte"
    with pytest.raises(StoreError, match="unknown label 'monocyte'"):
        store.review_cell(rec["id"], 0, "monocyte", "bob")
    with pytest.raises(StoreError, match="no cell 7"):
        store.review_cell(rec["id"], 7, "lymphocyte", "bob")
    with pytest.raises(StoreError, match="no result"):
        store.review_cell("nope", 0, "lymphocyte", "bob")
    with pytest.raises(StoreError, match="reviewer"):
        store.review_cell(rec["id"], 0, "lymphocyte", "")
    field = store.add_result({"source": "camera", "label": "Pre", "probabilities": {"Pre": 1.0}})
    with pytest.raises(StoreError, match="has no cells"):
        store.review_cell(field["id"], 0, "lymphocyte", "bob")
    assert store.sample_summary(sample["id"])["blasts"] == 0
    done = store.finish_sample(sample["id"])
    assert done["summary"]["kind"] == "cells" and done["summary"]["blasts"] == 0
    store.review_cell(rec["id"], 0, "blast_b", "bob")  # after Finish: still counts
    assert store.get_sample(sample["id"])["summary"]["blasts"] == 1
    assert store.sample_summary(sample["id"])["blasts"] == 1
    store.review_cell(rec["id"], 0, NOT_A_CELL, "bob")
    summary = store.get_sample(sample["id"])["summary"]
    assert summary["blasts"] == 0 and summary["excluded"] == 1 and summary["counted"] == 1
    assert [(rid, c.index) for rid, c in store.sample_cells(sample["id"])] == [(rec["id"], 0), (rec["id"], 1)]


def _pass(outbox: Outbox, answer: str = "accepted") -> list[dict]:
    batch = outbox.claim(100)
    outbox.settle([(r["id"], answer, None) for r in batch])
    return batch


def test_a_cell_review_is_sent_exactly_once_more(store):
    outbox = Outbox(store)
    rec = store.add_result(cells_record(), cells=[cell(0), cell(1, "blast", "blast_b")])
    first = _pass(outbox)
    assert [r["id"] for r in first] == [rec["id"]] and len(first[0]["cells"]) == 2  # the payload has cells
    assert _pass(outbox) == []
    store.review_cell(rec["id"], 1, "neutrophil", "bob")
    again = _pass(outbox)
    assert [r["id"] for r in again] == [rec["id"]]
    assert again[0]["cells"][1]["reviewed_label"] == "neutrophil"
    assert _pass(outbox) == []  # once, not again
    # the same review twice changes nothing and sends nothing
    store.review_cell(rec["id"], 1, "neutrophil", "bob")
    assert _pass(outbox) == []


def test_a_review_made_while_the_record_is_in_flight_is_not_lost(store):
    outbox = Outbox(store)
    rec = store.add_result(cells_record(), cells=[cell(0)])
    in_flight = outbox.claim(100)  # the payload leaves with the old cells
    assert in_flight[0]["cells"][0]["reviewed_label"] is None
    store.review_cell(rec["id"], 0, "blast_b", "bob")
    outbox.settle([(rec["id"], "accepted", None)])
    assert store.get_result(rec["id"]) is not None
    resent = _pass(outbox)
    assert [r["id"] for r in resent] == [rec["id"]] and resent[0]["cells"][0]["reviewed_label"] == "blast_b"
    assert _pass(outbox) == []
    # a review while pending rides along with the first send: no extra send
    rec2 = store.add_result(cells_record(), cells=[cell(0)])
    store.review_cell(rec2["id"], 0, "neutrophil", "bob")
    assert [r["id"] for r in _pass(outbox)] == [rec2["id"]]
    assert _pass(outbox) == []


def test_migration_keeps_older_records_and_accepts_cells(tmp_path):
    data = tmp_path / "old"
    data.mkdir()
    conn = sqlite3.connect(data / "smearscope.db", isolation_level=None)
    for i, script in enumerate(MIGRATIONS[:4]):
        for stmt in _statements(script):
            conn.execute(stmt)
        conn.execute(f"PRAGMA user_version={i + 1}")
    conn.execute("INSERT INTO samples (id, slide_id, started_at) VALUES ('s1', 'L', '2026-01-01T00:00:00Z')")
    for i in range(3):
        conn.execute(
            "INSERT INTO results (id, device_id, sample_id, captured_at, source, label, sync_state) "
            "VALUES (?, 'dev', 's1', '2026-01-01T00:00:00Z', 'camera', 'Pre', 'synced')",
            (f"r{i}",),
        )
    conn.execute(
        "INSERT INTO results (id, device_id, sample_id, captured_at, source, kind, review_of, label) "
        "VALUES ('v', 'dev', 's1', '2026-01-01T00:00:00Z', 'review', 'review', 'r0', 'Benign')"
    )
    conn.execute("DELETE FROM results WHERE id = 'r2'")  # the sequence must not go back
    conn.close()
    s = Store(data, reserve_bytes=0)
    assert s.conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert s.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert s.conn.execute("PRAGMA foreign_key_check").fetchall() == []
    assert [r["id"] for r in s.reviews_of("r0")] == ["v"]
    assert s.get_result("r1")["cells"] == [] and s.get_result("r1")["seq"] == 2
    new = s.add_result(cells_record("s1"), cells=[cell(0)])
    assert new["seq"] == 5 and new["cells"][0]["index"] == 0
    indexes = {r[0] for r in s.conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"results_captured", "results_sample", "results_sync", "results_heatmap"} <= indexes
    s.close()


def test_cells_config_defaults_and_validation(tmp_path):
    from device.config import CellsConfig, load_config
    from device.errors import ConfigError

    config = load_config(data_dir=tmp_path, system_config=None, env={})
    assert config.cells == CellsConfig() and (config.cells.target, config.cells.threshold) == (100, 0.02)
    bad_values = (("target", 0), ("threshold_pct", 0), ("threshold_pct", 100), ("max_unclassified_pct", -1))
    for key, bad in bad_values:
        with pytest.raises(ConfigError, match=rf"\[cells\] {key}"):
            load_config(data_dir=tmp_path, system_config=None, env={}, overrides={"cells": {key: bad}})
    custom = load_config(data_dir=tmp_path, system_config=None, env={}, overrides={"cells": {"target": 200}})
    store = Store.from_config(custom)
    try:
        assert store.cell_counting.target == 200
    finally:
        store.close()
