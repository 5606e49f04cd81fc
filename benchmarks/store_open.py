"""What the store's start-up checks cost: `PRAGMA quick_check` (run at every open by
`device.store.guard.inspect_db`) and a whole `Store` open, on a database of N records.

    PYTHONPATH=. .venv/bin/python benchmarks/store_open.py --records 10000 100000 \\
        --out benchmarks/results/store_open.json

Records are synthetic rows of the real schema (each with its own image row; no image files, which the
checks do not read). The median of `--repeat` opens is reported, with the page cache warm (a station's
first start after boot reads the file from the SD card once more).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from device.store import Store
from device.store.db import connect, migrate
from device.store.guard import inspect_db


def build(data: Path, n: int) -> int:
    conn = connect(data / "smearscope.db")
    migrate(conn)
    conn.execute("INSERT INTO meta (key, value) VALUES ('device_id', 'bench')")
    conn.execute("BEGIN")
    probs = json.dumps({"Benign": 0.1, "Early": 0.1, "Pre": 0.7, "Pro": 0.1})
    quality = json.dumps({"ok": True, "focus": 123.4, "clipped_high": 0.0, "clipped_low": 0.0, "stain": 0.3})
    models = json.dumps([{"name": "m", "sha256": "x"}])
    for _ in range(n):
        sha = uuid.uuid4().hex * 2
        conn.execute(
            "INSERT INTO images (sha256, bytes, created_at) VALUES (?, 90000, '2026-12-01T00:00:00Z')", (sha,)
        )
        conn.execute(
            "INSERT INTO results (id, device_id, captured_at, source, label, confidence, probabilities_json, "
            "quality_json, image_sha256, models_json) "
            "VALUES (?, 'bench', '2026-12-01T00:00:00.000Z', 'camera', 'Pre', 0.7, ?, ?, ?, ?)",
            (str(uuid.uuid4()), probs, quality, sha, models),
        )
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return (data / "smearscope.db").stat().st_size


def timed(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, nargs="+", default=[10000, 100000])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    rows = []
    for n in args.records:
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp)
            size = build(data, n)
            db = data / "smearscope.db"
            check_s = timed(lambda db=db: inspect_db(db), args.repeat)
            open_s = timed(lambda data=data: Store(data, reserve_bytes=0).close(), args.repeat)
        rows.append({"records": n, "db_mb": round(size / 2**20, 1), "quick_check_s": round(check_s, 3),
                     "store_open_s": round(open_s, 3)})  # fmt: skip
        print(rows[-1])
    result = {
        "machine": platform.machine(),
        "python": platform.python_version(),
        "repeat": args.repeat,
        "rows": rows,
    }
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
