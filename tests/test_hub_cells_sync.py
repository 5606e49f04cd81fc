"""Cells over real loopback sync: a station record with cells reaches the hub once; a cell review made
after it synced reaches the hub once more (the stored cell takes the review; no record or cell doubles).

The first test is the hub's half with the station's payload built by hand (through the station's own
HubClient); the second drives the station's store and Syncer and runs once the store takes cells
(`Store.add_result(..., cells=)` and `Store.review_cell`)."""

from __future__ import annotations

import inspect
import uuid

import pytest
from hubkit import Hub, Server, jpeg
from sqlalchemy import func, select
from test_hub_cells import cell, record

from device.store import Store
from device.sync import HubClient, Outbox, Syncer
from hub.models import Cell, Result


def _counts(hub: Hub) -> tuple[int, int]:
    with hub.sessions() as s:
        return (
            s.scalar(select(func.count()).select_from(Result)),
            s.scalar(select(func.count()).select_from(Cell)),
        )


def _reviews(hub: Hub, rid: str) -> list[tuple[str | None, str | None]]:
    with hub.sessions() as s:
        q = select(Cell.reviewed_label, Cell.reviewer).where(Cell.result_id == rid).order_by(Cell.cell_index)
        return [tuple(row) for row in s.execute(q)]


def test_a_hand_built_station_payload_and_its_cell_review_arrive_once(tmp_path):
    hub = Hub(f"sqlite:///{tmp_path / 'hub.db'}")
    server = Server(hub.app)
    client = HubClient(server.url, hub.device_token, timeout_s=5)
    try:
        rec = record(cells=[cell(0), cell(1, state="blast", label=None, p_blast=0.95)])
        assert client.post_results([rec]).answers == [(rec["id"], "accepted", None)]
        assert client.post_results([rec]).answers == [(rec["id"], "duplicate", None)]  # a lost answer
        assert _counts(hub) == (1, 2)
        review = {"reviewed_label": "blast_pre", "reviewer": "ana", "reviewed_at": "2026-11-22T02:00:00.000Z"}
        reviewed = dict(rec, cells=[cell(0), cell(1, state="blast", label=None, p_blast=0.95, **review)])
        assert client.post_results([reviewed]).answers == [(rec["id"], "duplicate", None)]
        assert _counts(hub) == (1, 2)
        assert _reviews(hub, rec["id"]) == [(None, None), ("blast_pre", "ana")]
    finally:
        client.close()
        server.close()


#: The field's differential a 'cells' record stores (the station's Differential.to_dict, trimmed): it
#: declares the labels the record's cells may be reviewed as.
DIFFERENTIAL = {
    "counts": [
        {"id": "blast_pre", "display": "Blast (pre-B ALL)", "blast": True, "n": 0},
        {"id": "lymphocyte", "display": "Lymphocyte", "blast": False, "n": 3},
    ],
    "others": [],
}

_STORE_TAKES_CELLS = "cells" in inspect.signature(Store.add_result).parameters and hasattr(
    Store, "review_cell"
)


@pytest.mark.skipif(
    not _STORE_TAKES_CELLS, reason="the station's store does not take cells yet (branch h-store)"
)
def test_station_cells_and_a_later_cell_review_reach_the_hub_once(tmp_path):
    import numpy as np

    from device.cells.record import CellRecord

    hub = Hub(f"sqlite:///{tmp_path / 'hub.db'}")
    store = Store(tmp_path / "dev", reserve_bytes=0)
    sha = store.put_image(jpeg(np.random.default_rng(0), 64))
    cells = [CellRecord.from_dict(cell(i)) for i in range(3)]
    rec = store.add_result(
        {
            "source": "camera",
            "kind": "cells",
            "models": [{"name": "cellnet", "sha256": "0" * 64}],
            "probabilities": {"blast_pre": 0.02, "lymphocyte": 0.98},
            "label": "NO_BLASTS_SEEN",
            "confidence": 1.0,
            "abstained": False,
            "quality": {"ok": True, "reasons": [], "differential": DIFFERENTIAL},
            "image_sha256": sha,
            "um_per_px": 0.25,
        },
        cells=cells,
    )
    server = Server(hub.app)
    client = HubClient(server.url, hub.device_token, timeout_s=5)
    syncer = Syncer(Outbox(store), client, batch_size=10)
    try:
        assert syncer.run().accepted == 1
        assert _counts(hub) == (1, 3) and hub.result_ids() == [rec["id"]]
        store.review_cell(rec["id"], 1, "blast_pre", "ana")
        assert Outbox(store).counts()["pending"] == 1  # the review marks the record for re-sync
        again = syncer.run()
        assert again.sent == 1 and again.duplicate == 1
        assert _counts(hub) == (1, 3)
        assert _reviews(hub, rec["id"]) == [(None, None), ("blast_pre", "ana"), (None, None)]
        assert syncer.run().sent == 0  # synced: nothing more goes
        got = hub.client().get(f"/api/v1/results/{rec['id']}", headers=hub.usr()).get_json()
        assert [c["reviewed_label"] for c in got["cells"]] == [None, "blast_pre", None]
        assert uuid.UUID(got["id"])
    finally:
        client.close()
        server.close()
        store.close()
