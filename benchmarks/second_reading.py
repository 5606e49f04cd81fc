"""The field models' second reading (device/screening/second.py): what it adds, what it costs.

    .venv/bin/python benchmarks/second_reading.py --ball-test DIR [--pbc DIR] [--pbc-list FILE]
        [--shift-images 150] [--normal-fields 400]

The station's path with its shipped pair (the cell ensemble of models/DEFAULT and the field models of
models/SECOND_READING), every field screened once: the cells' own call is the field's call with the
second reading left out (a field the reading called was uncertain by its cells), so both columns come
from the same pass.

(a) B-ALL test images (label folders Benign/Early/Pre/Pro, at 0.479 µm/px): right / uncertain /
    confidently wrong, a field of blasts right on Early/Pre/Pro, a field without blasts on Benign.
(b) The same images shifted as a field station shifts them (a subset stratified by folder; the shifts of
    benchmarks/robustness.py: white balance, camera gain and offset, stain, blur, noise, JPEG).
(c) Normal fields of another lab: PBC normal cells (all eight types; `--pbc-list` restricts them to a
    test split) composited onto cell-free PBC background at 0.479 µm/px (benchmarks/cell_detection.py),
    1, 2, 3, 6 or 12 cell places per 120 x 90 µm field: called blast (a confident error on a normal
    smear) / uncertain / cleared.
(d) Cost: the second reading's time per field it reads against the cell path's time per field.

Writes benchmarks/results/second_reading.json and .md.
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

from device.config import load_config  # noqa: E402
from device.datasets.folders import list_class_folders, scan  # noqa: E402
from device.fsutil import atomic_write_bytes  # noqa: E402
from device.models.ensemble import Ensemble  # noqa: E402
from device.paths import default_bundle_dirs  # noqa: E402
from device.preprocess import read_image  # noqa: E402
from device.screening.screen import CellScreen  # noqa: E402
from device.screening.second import load_reader  # noqa: E402
from device.screening.stages import COUNTED, FieldCells, ScreenSettings  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
UM = 0.479
PBC_UM = 0.108  # training/cells/crops.py PBC_UM_PER_PX
MALIGNANT = {"Early", "Pre", "Pro"}
SHIFTS = [
    ("white_balance", "strong"),
    ("camera", "mild"),
    ("stain", "strong"),
    ("blur", "mild"),
    ("noise", "strong"),
    ("jpeg", "strong"),
]
SLOTS = (1, 2, 3, 6, 12)


def call(fc: FieldCells, blast_ids: set[str], *, with_second: bool) -> str:
    """ "blast" | "no_blast" | "uncertain" of the station's record, with or without its second reading."""
    if fc.state != COUNTED or fc.abstained:
        return "uncertain"
    if not with_second and fc.second is not None and fc.second.decided:
        return "uncertain"  # the cells alone left it uncertain
    return "blast" if fc.label in blast_ids else "no_blast"


def outcome(c: str, malignant: bool) -> str:
    if c == "uncertain":
        return "uncertain"
    return "right" if (c == "blast") == malignant else "confidently_wrong"


def rates(outcomes: list[str]) -> dict:
    n = len(outcomes)
    k = Counter(outcomes)
    return {
        "n": n,
        **{o: k[o] for o in ("right", "uncertain", "confidently_wrong")},
        **{f"{o}_rate": (k[o] / n if n else None) for o in ("right", "uncertain", "confidently_wrong")},
    }


class Runner:
    def __init__(self, screen: CellScreen):
        self.screen = screen
        self.blast_ids = {lb.id for lb in screen.ensemble.labels if lb.malignant}
        self.cell_ms: list[float] = []
        self.second_ms: list[float] = []

    def run(self, rgb: np.ndarray) -> FieldCells:
        t0 = time.perf_counter()
        fc = self.screen.screen(rgb, UM)
        total = (time.perf_counter() - t0) * 1000
        second = fc.second.ms if fc.second is not None else 0.0
        self.cell_ms.append(total - second)
        if fc.second is not None:
            self.second_ms.append(second)
        return fc

    def judge(self, rows: list[tuple[FieldCells, bool]]) -> dict:
        alone = [outcome(call(fc, self.blast_ids, with_second=False), m) for fc, m in rows]
        both = [outcome(call(fc, self.blast_ids, with_second=True), m) for fc, m in rows]
        read = [fc for fc, _ in rows if fc.second is not None]
        return {
            "cells_alone": rates(alone),
            "with_second_reading": rates(both),
            "second_read": len(read),
            "second_called": sum(bool(fc.second.decided) for fc in read if fc.second is not None),
        }


def ball(runner: Runner, data: Path, limit_per_folder: int | None, shift=None) -> dict:
    folders = list_class_folders(data)
    rows = []
    for folder in folders:
        items, _ = scan(data, labels=[folder], dedupe=False)
        items = sorted(items, key=lambda it: str(it.path))
        if limit_per_folder:
            items = items[:: max(1, len(items) // limit_per_folder)][:limit_per_folder]
        for i, it in enumerate(items):
            rgb = read_image(it.path)
            if shift is not None:
                rgb = shift(rgb, i)
            rows.append((runner.run(rgb), folder in MALIGNANT))
    return runner.judge(rows)


def normal_fields(runner: Runner, pbc: Path, names: set[str] | None, n_fields: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    sprites = {}
    for t in cd.PBC_TYPES:
        files = sorted((pbc / t).glob("*.jpg"))
        if names is not None:
            files = [f for f in files if f"{t}/{f.name}" in names]
        sprites[t] = [cd.make_sprite(read_image(f), t, PBC_UM, UM) for f in files]
    squares = cd.background_squares(pbc, PBC_UM, UM, 40)
    out = {}
    reader = runner.screen.reader
    assert reader is not None
    for slots in SLOTS:
        rows, alone = [], Counter()
        for _ in range(n_fields // len(SLOTS)):
            img, _truths = cd.compose_field(rng, sprites, squares, UM, cd.FIELD_UM, n_slots=slots)
            fc = runner.run(img)
            if fc.state == COUNTED:
                rows.append((fc, False))
                # the field models on EVERY normal field, not only those the cells leave uncertain:
                # how often they would call a normal field of another lab malignant on their own
                r = fc.second if fc.second is not None else reader.read(fc)
                alone[
                    r.state if r.state != "not_read" or r.leaning is None else f"not_read_leaning_{r.leaning}"
                ] += 1
        out[str(slots)] = {**runner.judge(rows), "field_models_on_every_field": dict(alone)}
    return out


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def _line(name: str, r: dict) -> str:
    a, b = r["cells_alone"], r["with_second_reading"]
    return (
        f"| {name} | {a['n']} | {_pct(a['right_rate'])} / {_pct(a['uncertain_rate'])} / "
        f"{_pct(a['confidently_wrong_rate'])} | {_pct(b['right_rate'])} / {_pct(b['uncertain_rate'])} / "
        f"{_pct(b['confidently_wrong_rate'])} | {r['second_read']} | {r['second_called']} |"
    )


def markdown(res: dict) -> str:
    head = "| set | n | cells alone: right / uncertain / wrong | with second reading | read | called |"
    sep = "| --- | --- | --- | --- | --- | --- |"
    lines = [
        "# Second reading of uncertain cell fields by the field models",
        "",
        "A screening aid for trained staff, not a diagnosis. Made by `benchmarks/second_reading.py` "
        f"({res['machine']}); cell models {', '.join(res['cells'])}, "
        f"field models {', '.join(res['fields'])}.",
        "",
        "## B-ALL test images (0.479 µm/px) and shifted copies",
        "",
        f"Images: `{res['ball_test']}`{': ' + res['ball_note'] if res.get('ball_note') else ''}. "
        f"Shifted copies: {res['shift_images']} images per folder at most.",
        "",
        head,
        sep,
        _line("as they are", res["ball"]),
    ]
    lines += [_line(f"{k} ({v['what']})", v) for k, v in res["shifts"].items()]
    lines += [
        "",
        "## Normal fields of another lab (PBC cells composited at 0.479 µm/px)",
        "",
        "Every field is normal: a blast call is a confident error, a cleared field is right.",
        "",
        head.replace("| set |", "| cell places |"),
        sep,
    ]
    lines += [_line(k, v) for k, v in res["normal_fields"].items()]
    lines += [
        "",
        "The field models' own reading of every one of these normal fields (not only those the cells "
        "leave uncertain), by cell places: "
        + "; ".join(f"{k}: {v['field_models_on_every_field']}" for k, v in res["normal_fields"].items())
        + ".",
    ]
    c = res["cost"]
    lines += [
        "",
        "## Cost",
        "",
        f"The second reading takes {c['ratio']:.2f} x the cell path's time of a field, on the fields "
        "it reads "
        f"({c['second_ms']:.0f} ms against {c['cell_ms']:.0f} ms median in this run; "
        f"{c['read_share']:.1%} of all fields were read).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ball-test", required=True, type=Path, help="B-ALL test images (Benign/Early/Pre/Pro)")
    p.add_argument("--pbc", type=Path, default=ROOT.parent / "shared/datasets/pbc-normal")
    p.add_argument("--pbc-list", type=Path, help="PBC images to use, one '<type>/<file>' per line")
    p.add_argument("--shift-images", type=int, default=40, help="per folder, per shift")
    p.add_argument("--normal-fields", type=int, default=500)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", type=Path, default=RESULTS / "second_reading")
    p.add_argument("--ball-note", default="", help="what the B-ALL test images are (for the report)")
    p.add_argument("--markdown-only", action="store_true", help="rewrite the .md from the .json")
    args = p.parse_args(argv)
    if args.markdown_only:
        res = json.loads(args.out.with_suffix(".json").read_text())
        res["ball_note"] = args.ball_note or res.get("ball_note", "")
        atomic_write_bytes(args.out.with_suffix(".json"), (json.dumps(res, indent=2) + "\n").encode())
        atomic_write_bytes(args.out.with_suffix(".md"), markdown(res).encode())
        return 0
    config = load_config(system_config=None, env={})
    dirs = default_bundle_dirs()
    ensemble = Ensemble.from_dirs([str(d) for d in dirs], num_threads=1)
    reader = load_reader(config, dirs, threads=1)
    if reader is None:
        raise SystemExit("no second reader: models/SECOND_READING names none")
    runner = Runner(CellScreen(ensemble, ScreenSettings.from_config(config), reader=reader))
    res: dict = {
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "cells": ensemble.names,
        "fields": reader.ensemble.names,
        "ball_test": str(args.ball_test),
        "ball_note": args.ball_note,
        "shift_images": args.shift_images,
    }
    res["ball"] = ball(runner, args.ball_test, None)
    print("ball", json.dumps(res["ball"]), flush=True)
    res["shifts"] = {}
    for name, sev in SHIFTS:
        what, fn = rb.SHIFTS[name][sev]
        r = ball(runner, args.ball_test, args.shift_images, shift=fn)
        res["shifts"][f"{name}:{sev}"] = {"what": what, **r}
        print(name, sev, json.dumps(r), flush=True)
    names = set(args.pbc_list.read_text().split()) if args.pbc_list else None
    res["normal_fields"] = normal_fields(runner, args.pbc, names, args.normal_fields, args.seed)
    print("normal", json.dumps(res["normal_fields"]), flush=True)
    cell_ms, second_ms = float(np.median(runner.cell_ms)), float(np.median(runner.second_ms or [0.0]))
    res["cost"] = {
        "cell_ms": cell_ms,
        "second_ms": second_ms,
        "ratio": second_ms / cell_ms if cell_ms else 0.0,
        "read_share": len(runner.second_ms) / max(1, len(runner.cell_ms)),
    }
    atomic_write_bytes(args.out.with_suffix(".json"), (json.dumps(res, indent=2) + "\n").encode())
    atomic_write_bytes(args.out.with_suffix(".md"), markdown(res).encode())
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
