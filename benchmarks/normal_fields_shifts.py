"""Normal fields of another lab through the acquisition shifts: does the station ever call a blast?

    python benchmarks/normal_fields_shifts.py --pbc DIR [--fields 60] [--seed 3]

`--pbc`: a folder of the other lab's single-cell pictures by type (e.g. the cell bundles' held-out ones:
`python scripts/cell_test_folder.py models/cells-mobilenetv2-96-int8 ../shared/datasets/pbc-normal DIR`).
Fields of 3-12 cell places at 0.479 µm/px are composited from them as `benchmarks/cell_detection.py`
composites (PBC background squares from `../shared/datasets/pbc-normal`), and every field is rendered
through each shift of `benchmarks/robustness.py` used here and screened by the station's default path
(cells, field rule, second reading). Per shift: the fields' calls (no blast / uncertain / blast), and the
white cells decided blast or left unclassified. Every field is normal: a blast call is a false alarm.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import cell_detection as cd  # noqa: E402
import robustness as rb  # noqa: E402
import second_reading as sr  # noqa: E402

from device.config import load_config  # noqa: E402
from device.fsutil import atomic_write_bytes  # noqa: E402
from device.models.ensemble import Ensemble  # noqa: E402
from device.paths import default_bundle_dirs  # noqa: E402
from device.preprocess import read_image  # noqa: E402
from device.screening.screen import CellScreen  # noqa: E402
from device.screening.second import load_reader  # noqa: E402
from device.screening.stages import ScreenSettings  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
SHIFTS = [
    ("stain", "mild"),
    ("stain", "strong"),
    ("white_balance", "strong"),
    ("camera", "mild"),
    ("gamma", "mild"),
    ("gamma", "strong"),
    ("blur", "mild"),
]


def _row(*cells: object) -> str:
    return "| " + " | ".join(map(str, cells)) + " |"


def markdown(res: dict, n_fields: int) -> str:
    head = (
        "shift",
        "what",
        "fields: no blast / uncertain / blast",
        "white cells",
        "decided blast",
        "unclassified",
    )
    out = [
        "# Normal fields of another lab through the acquisition shifts (benchmarks/normal_fields_shifts.py)",
        "",
        f"A screening aid for trained staff, not a diagnosis. Command: `{res['command']}` ({res['machine']}, "
        f"{res['seconds']} s); models {', '.join(res['models'])}. {n_fields} fields of 3-12 cell places at "
        f"{sr.UM} µm/px, every one normal: a blast call is a false alarm.",
        "",
        _row(*head),
        _row(*["---"] * len(head)),
    ]
    for key, r in res["rows"].items():
        calls = " / ".join(str(r["fields"].get(k, 0)) for k in ("no_blast", "uncertain", "blast"))
        unc = r["cells_unclassified_rate"]
        share = "-" if unc is None else f"{unc:.1%}"
        out.append(_row(key, r["what"], calls, r["white_cells"], r["cells_blast"], share))
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--pbc", required=True, type=Path, help="the other lab's cell pictures, one folder per type"
    )
    p.add_argument("--background", type=Path, default=ROOT.parent / "shared/datasets/pbc-normal")
    p.add_argument("--fields", type=int, default=60)
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--out", type=Path, default=RESULTS / "normal_fields_shifts")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    config = load_config(system_config=None, env={})
    dirs = default_bundle_dirs()
    ensemble = Ensemble.from_dirs([str(d) for d in dirs], num_threads=2)
    screen = CellScreen(
        ensemble, ScreenSettings.from_config(config), reader=load_reader(config, dirs, threads=2)
    )
    blast_ids = {lb.id for lb in ensemble.labels if lb.malignant}
    rng = np.random.default_rng(args.seed)
    sprites = {
        t: [cd.make_sprite(read_image(f), t, sr.PBC_UM, sr.UM) for f in sorted((args.pbc / t).glob("*.jpg"))]
        for t in cd.PBC_TYPES
    }
    squares = cd.background_squares(args.background, sr.PBC_UM, sr.UM, 40)
    fields = [
        cd.compose_field(rng, sprites, squares, sr.UM, cd.FIELD_UM, n_slots=int(rng.integers(3, 13)))[0]
        for _ in range(args.fields)
    ]
    rows = {}
    for name, sev in [(None, None), *SHIFTS]:
        what, fn = ("as made", None) if name is None else rb.SHIFTS[name][sev]
        calls, cells = Counter(), Counter()
        for i, f in enumerate(fields):
            fc = screen.screen(f if fn is None else fn(f, i), sr.UM)
            calls[sr.call(fc, blast_ids, with_second=True)] += 1
            cells.update(c.state for c in fc.live if c.kind == "white")
        n = sum(cells.values())
        key = "none" if name is None else f"{name}:{sev}"
        rows[key] = {
            "what": what,
            "fields": dict(calls),
            "white_cells": n,
            "cells_blast": cells["blast"],
            "cells_unclassified_rate": cells["unclassified"] / n if n else None,
        }
        print(key, json.dumps(rows[key]), flush=True)
    res = {
        "command": "python benchmarks/normal_fields_shifts.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "models": ensemble.names,
        "seconds": round(time.perf_counter() - t0),
        "rows": rows,
    }
    atomic_write_bytes(args.out.with_suffix(".json"), (json.dumps(res, indent=2) + "\n").encode())
    atomic_write_bytes(args.out.with_suffix(".md"), markdown(res, args.fields).encode())
    print(f"wrote {args.out}.json and .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
