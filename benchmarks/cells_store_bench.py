"""What per-cell records cost the station (not timed tests): migration 5 on an existing store, writing a
record with its cells, the slide's summary, the sample page with its gallery, one reclassification,
and a cell thumbnail (first cut from a 1920x1080 frame with its 49 siblings, then cached).

    PYTHONPATH=. .venv/bin/python benchmarks/cells_store_bench.py --records 100000 \\
        --out benchmarks/results/cells_store.json

Medians over `--repeat` runs, page cache warm. Records and cells are synthetic rows of the real schema.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from webkit import login, make_app, token_of  # noqa: E402

from device.cells.record import CellRecord  # noqa: E402
from device.store.db import _statements, connect  # noqa: E402
from device.store.migrations import MIGRATIONS  # noqa: E402

LABELS = [
    {"id": "lymphocyte", "display": "Lymphocyte", "blast": False, "n": 0},
    {"id": "neutrophil", "display": "Neutrophil", "blast": False, "n": 0},
    {"id": "monocyte", "display": "Monocyte", "blast": False, "n": 0},
    {"id": "blast", "display": "Blast", "blast": True, "n": 0},
]
PROBS = {"lymphocyte": 0.85, "neutrophil": 0.05, "monocyte": 0.05, "blast": 0.05}


def timed(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(1000 * statistics.median(times), 2)


def migration(n: int) -> dict:
    """Schema 4 with `n` records → migration 5 (the `results` rebuild and the `cells` table)."""
    with tempfile.TemporaryDirectory() as tmp:
        conn = connect(Path(tmp) / "smearscope.db")
        for i, script in enumerate(MIGRATIONS[:4]):
            conn.execute("BEGIN")
            for stmt in _statements(script):
                conn.execute(stmt)
            conn.execute(f"PRAGMA user_version={i + 1}")
            conn.execute("COMMIT")
        conn.execute("BEGIN")
        probs = json.dumps({"Benign": 0.1, "Early": 0.1, "Pre": 0.7, "Pro": 0.1})
        for _ in range(n):
            conn.execute(
                "INSERT INTO results (id, device_id, captured_at, source, label, confidence, "
                "probabilities_json, image_sha256) "
                "VALUES (?, 'bench', '2026-12-01T00:00:00.000Z', 'camera', 'Pre', 0.7, ?, ?)",
                (str(uuid.uuid4()), probs, uuid.uuid4().hex * 2),
            )
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        from device.store.db import migrate

        t0 = time.perf_counter()
        migrate(conn)
        seconds = time.perf_counter() - t0
        conn.close()
    return {"records": n, "migration_5_s": round(seconds, 3)}


def cells(k: int, width: int = 1920, height: int = 1080, seed: int = 0) -> list[CellRecord]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(k):
        x, y = int(rng.integers(40, width - 80)), int(rng.integers(40, height - 80))
        state, label = ("blast", "blast") if i % 25 == 0 else ("not_blast", "lymphocyte")
        box = (x, y, x + 40, y + 40)
        out.append(CellRecord(i, box, x + 20.0, y + 20.0, "white", state, label, 0.05, PROBS))
    return out


def web_and_store(records: int, per_record: int, repeat: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        app, svc = make_app(Path(tmp))
        store = svc.store
        frame = np.random.default_rng(1).integers(0, 255, (1080, 1920, 3), np.uint8)
        ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])
        sample = store.open_sample("BENCH", user="tech")
        quality = {"ok": True, "differential": {"counts": LABELS, "others": []}}

        def write(k: int) -> dict:
            sha, size = store.write_image(buf.tobytes() + uuid.uuid4().bytes)  # a new frame each time
            return store.add_result(
                {"source": "camera", "kind": "cells", "label": "lymphocyte", "sample_id": sample["id"],
                 "image_sha256": sha, "quality": quality},
                images=[(sha, size)],
                cells=cells(k),
            )  # fmt: skip

        out = {"cells_per_record": per_record, "records_in_sample": records}
        out["add_result_0_cells_ms"] = timed(lambda: write(0), repeat)
        out["add_result_ms"] = timed(lambda: write(per_record), repeat)
        # the sample measured: `records` records of `per_record` cells (the writes above are in it too)
        for _ in range(records - repeat):
            last = write(per_record)
        n_cells = len(store.sample_cells(sample["id"]))
        out["sample_cells"] = n_cells
        out["sample_summary_ms"] = timed(lambda: store.sample_summary(sample["id"]), repeat)
        client = app.test_client()
        login(client)
        page = f"/samples/{sample['id']}"
        assert client.get(page).status_code == 200
        out["sample_page_ms"] = timed(lambda: client.get(page), repeat)
        out["sample_page_kb"] = round(len(client.get(page).data) / 1024, 1)
        token = token_of(client)
        url = f"/samples/{sample['id']}/cells/{last['id']}/1"
        labels = iter(["neutrophil", "lymphocyte"] * repeat)
        out["reclassify_ms"] = timed(
            lambda: client.post(url, json={"label": next(labels)}, headers={"X-CSRF-Token": token}), repeat
        )
        thumbs = iter(range(repeat))

        def first_thumb() -> None:
            rec = write(per_record)  # a frame nobody has cut yet
            assert client.get(f"/samples/{sample['id']}/cells/{rec['id']}/0.jpg").status_code == 200
            next(thumbs)

        out["thumbnail_first_ms_incl_write"] = timed(first_thumb, repeat)
        cached = f"/samples/{sample['id']}/cells/{last['id']}/2.jpg"
        client.get(cached)
        out["thumbnail_cached_ms"] = timed(lambda: client.get(cached), repeat)
        store.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=100_000, help="records in the store migrated")
    ap.add_argument("--sample-records", type=int, default=10, help="cell records in the sample measured")
    ap.add_argument("--cells", type=int, default=50, help="cells per record")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    result = {
        "machine": {"python": platform.python_version(), "processor": platform.machine()},
        "migration": migration(args.records),
        "cells": web_and_store(args.sample_records, args.cells, args.repeat),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
