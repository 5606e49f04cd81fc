"""Cost of cells on the hub: ingesting 'cells' records, a resend carrying cell reviews, a record page's
thumbnails and the cells export, on a throwaway SQLite (or PostgreSQL) database, in process (Flask test
client: the hub's own time, no network).

    .venv/bin/python benchmarks/hub_cells_bench.py [--db sqlite|postgres] [--records 200] [--cells 40]
        [--json benchmarks/results/hub_cells_sqlite.json]

Each record carries `--cells` cells and names one 2028 x 1520 JPEG (a HQ camera field); every record's
cell 0 is reviewed in the resend.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path

import cv2
import numpy as np

from hub import tokens
from hub.app import HubSettings, create_app
from hub.cli import main as hub_main


def _record(i: int, sha: str, n_cells: int, review: bool) -> dict:
    cells = []
    for k in range(n_cells):
        x0, y0 = 40 + (k % 10) * 190, 40 + (k // 10) * 190
        c = {
            "index": k,
            "box": [x0, y0, x0 + 120, y0 + 120],
            "x": x0 + 60.0,
            "y": y0 + 60.0,
            "kind": "white",
            "state": "not_blast",
            "label": "lymphocyte",
            "p_blast": 0.02,
            "probabilities": {"blast_pre": 0.02, "lymphocyte": 0.9, "monocyte": 0.08},
            "reason": None,
            "reviewed_label": None,
            "reviewer": None,
            "reviewed_at": None,
        }
        if review and k == 0:
            c.update(reviewed_label="blast_pre", reviewer="ana", reviewed_at="2026-12-01T10:00:00.000Z")
        cells.append(c)
    return {
        "id": str(uuid.UUID(int=i + 1)),
        "seq": i,
        "sample_id": str(uuid.UUID(int=10**9)),
        "captured_at": "2026-12-01T09:00:00.000Z",
        "source": "camera",
        "kind": "cells",
        "models": [{"name": "cellnet", "sha256": "0" * 64}],
        "probabilities": {},
        "label": "NO_BLASTS_SEEN",
        "confidence": 1.0,
        "abstained": False,
        "quality": {
            "ok": True,
            "differential": {
                "counts": [
                    {"id": "blast_pre", "display": "Blast", "blast": True, "n": 0},
                    {"id": "lymphocyte", "display": "Lymphocyte", "blast": False, "n": n_cells},
                ],
                "others": [],
            },
        },
        "image_sha256": sha,
        "um_per_px": 0.0725,
        "cells": cells,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", default="sqlite", choices=["sqlite", "postgres"])
    ap.add_argument("--records", type=int, default=200)
    ap.add_argument("--cells", type=int, default=40)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        cluster = None
        if args.db == "postgres":
            from hub.pgcluster import TempPostgres

            cluster = TempPostgres().start()
            url = cluster.create_database()
        else:
            url = f"sqlite:///{Path(tmp) / 'hub.db'}"
        try:
            out = _run(url, args, Path(tmp))
        finally:
            if cluster is not None:
                cluster.stop()
    out.update(db=args.db, python=sys.version.split()[0], machine=platform.machine())
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


def _run(url: str, args: argparse.Namespace, tmp: Path) -> dict:
    app = create_app(url, settings=HubSettings(max_body_mb=64, max_batch=1000))
    with app.extensions["hub"]["sessions"]() as s:
        dev = {"Authorization": f"Bearer {tokens.add_device(s, 'scope-1')}"}
        user_token = tokens.add_user(s, "reader")
    c = app.test_client()
    rng = np.random.default_rng(0)
    field = cv2.GaussianBlur(rng.integers(0, 255, (1520, 2028, 3), dtype=np.uint8), (0, 0), 3)
    ok, buf = cv2.imencode(".jpg", field, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    jpeg = buf.tobytes()
    sha = hashlib.sha256(jpeg).hexdigest()
    assert c.put(f"/api/v1/images/{sha}", data=jpeg, headers=dev).status_code == 201

    def push(review: bool) -> float:
        t0 = time.perf_counter()
        for start in range(0, args.records, args.batch):
            recs = [
                _record(i, sha, args.cells, review)
                for i in range(start, min(args.records, start + args.batch))
            ]
            r = c.post("/api/v1/results", json={"records": recs}, headers=dev)
            assert r.status_code == 200, r.get_json()
        return time.perf_counter() - t0

    first = push(False)
    resend = push(True)
    c.post("/login", data={"token": user_token})
    rid = str(uuid.UUID(int=1))
    t0 = time.perf_counter()
    assert c.get(f"/records/{rid}").status_code == 200
    page_s = time.perf_counter() - t0
    thumbs = []
    for k in range(args.cells):
        t0 = time.perf_counter()
        assert c.get(f"/cells/{rid}/{k}.jpg").status_code == 200
        thumbs.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    assert c.get(f"/samples/{uuid.UUID(int=10**9)}").status_code == 200
    sample_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    assert hub_main(["--db", url, "export-dataset", "--cells", "--out", str(tmp / "cells")]) == 0
    export_s = time.perf_counter() - t0
    n = args.records * args.cells
    return {
        "records": args.records,
        "cells_per_record": args.cells,
        "ingest_s": round(first, 3),
        "ingest_cells_per_s": round(n / first),
        "resend_with_reviews_s": round(resend, 3),
        "record_page_ms": round(page_s * 1000, 1),
        "thumbnail_first_ms": round(thumbs[0] * 1000, 1),
        "thumbnail_cached_median_ms": round(float(np.median(thumbs[1:])) * 1000, 1)
        if len(thumbs) > 1
        else None,
        "sample_page_ms": round(sample_s * 1000, 1),
        "export_reviewed_cells": args.records,
        "export_s": round(export_s, 3),
    }


if __name__ == "__main__":
    raise SystemExit(main())
