"""Counting slides on the virtual microscope with real cell bundles: how many fields to reach 100 white
cells, and which call each slide gets.

    PYTHONPATH=. .venv/bin/python benchmarks/live_cells.py [--bundle DIR]... [--width 264 --height 196]
        [--max-fields 60] [--target 100] [--out benchmarks/results/live_cells]

One virtual slide per class of the shipped sample images (device/samples: Benign, Early, Pre, Pro; four
224-px images each, 0.479 µm/px), plus one of all sixteen. The virtual stage visits its fields in its
own order (`VirtualMicroscope.fields`, seed 0); each settled field is rendered once and stored in the
slide's sample through the station's own services (`Services.classify_upload` at the field's known
scale: the same frame → cells → result path and writer as the camera), as a technician capturing every
field would; the slide's count and call are the store's (`Store.sample_summary`, the rule of the live
page's running count and the report). It stops at the target's white cells or at `--max-fields`.

Default bundles: models/cells-* (all of them, one ensemble), else runs/bundles/cells-* that hold a
model. A 264 x 196 px field at 0.479 µm/px is 126 x 94 µm, what a Raspberry Pi HQ camera sees through a
100x oil objective (docs/examples/virtual-hq.toml); the samples are not enlarged (no detail invented).

Caveat: a class's slide is four images laid 2 x 2 and mirrored so the stage wraps around; fields
overlap and the mirrored copies repeat cells, so 100 "white cells" may count a cell more than once.
The figures show the station's path and the models' calls on these images, not a clinical measurement.
A screening aid for trained staff, not a diagnosis.

Writes `<out>.json` (per slide and per field) and `<out>.md` (the table).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from device.camera.virtual import SAMPLES_UM_PER_PX, VirtualMicroscope, VirtualOptics  # noqa: E402
from device.config import load_config  # noqa: E402
from device.paths import SAMPLES_DIR  # noqa: E402
from device.services import Services  # noqa: E402

CLASSES = ("Benign", "Early", "Pre", "Pro")


def default_bundles() -> list[Path]:
    shipped = sorted(p for p in (ROOT / "models").glob("cells-*") if (p / "model.tflite").is_file())
    if shipped:
        return shipped
    return sorted(p for p in (ROOT / "runs/bundles").glob("cells-*") if (p / "model.tflite").is_file())


def slides() -> dict[str, list[Path]]:
    images = sorted(SAMPLES_DIR.glob("*.jpg"))
    out = {c: [p for p in images if p.name.startswith(c + "__")] for c in CLASSES}
    out["all"] = images
    return out


def _rgb(path: Path):
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def count_slide(
    services: Services, name: str, images: list[Path], optics: VirtualOptics, target: int, max_fields: int
) -> dict[str, Any]:
    scope = VirtualMicroscope.from_images([_rgb(p) for p in images], optics)
    sample = services.store.open_sample(f"virtual-{name}", user="benchmark")
    per_field: list[dict[str, Any]] = []
    reached: int | None = None
    detected_reached: int | None = None  # the detector alone: fields until 100 white cells were found
    detected = 0
    summary: dict[str, Any] = {}
    t0 = time.perf_counter()
    for k in range(max_fields):
        cx, cy = scope.fields[k % len(scope.fields)]
        frame = scope.view(float(cx), float(cy))
        t = time.perf_counter()
        rec = services.classify_upload(
            frame, filename=f"{name}-field-{k}.png", sample_id=sample["id"], user="benchmark",
            um_per_px=optics.frame_um_per_px,
        )  # fmt: skip
        ms = (time.perf_counter() - t) * 1000
        field = rec.get("field") or {}
        summary = services.store.sample_summary(sample["id"])
        per_field.append(
            {
                "field": k,
                "state": field.get("state"),
                "white_cells": field.get("white_cells"),
                "field_line": field.get("field_line"),
                "ms": round(ms, 1),
                "slide_counted": summary.get("counted"),
                "slide_blasts": summary.get("blasts"),
                "slide_call": summary.get("call"),
            }
        )
        detected += field.get("white_cells") or 0
        if detected_reached is None and detected >= target:
            detected_reached = k + 1
        if reached is None and (summary.get("counted") or 0) >= target:
            reached = k + 1
            break
    seconds = time.perf_counter() - t0
    return {
        "slide": name,
        "images": [p.name for p in images],
        "fields": len(per_field),
        "fields_to_target": reached,
        "fields_to_detected_target": detected_reached,
        "white_cells_detected": sum(f["white_cells"] or 0 for f in per_field),
        "counted": summary.get("counted"),
        "unclassified": summary.get("unclassified"),
        "blasts": summary.get("blasts"),
        "blast_pct": summary.get("blast_pct"),
        "ci_low_pct": summary.get("ci_low_pct"),
        "ci_high_pct": summary.get("ci_high_pct"),
        "call": summary.get("call"),
        "call_text": summary.get("call_text"),
        "refused_fields": sum(f["state"] == "refused" for f in per_field),
        "no_cell_fields": sum(f["state"] == "no_cells" for f in per_field),
        "ms_per_field": round(1000 * seconds / max(1, len(per_field)), 1),
        "per_field": per_field,
    }


def run(bundles: list[Path], width: int, height: int, target: int, max_fields: int) -> dict[str, Any]:
    optics = VirtualOptics(width=width, height=height, um_per_px=0.0, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        over: dict[str, Any] = {
            "classifier": {"models": [str(b) for b in bundles]},
            "store": {"every_s": 86400.0, "reserve_mb": 0},
            "quality": {"enabled": False},  # every field is screened: the gate is not measured here
            "cells": {"target": target},
            "models": {"allow_unsigned": True},  # candidates from runs/ are unsigned
        }
        cfg = load_config(data_dir=Path(tmp) / "data", overrides=over, system_config=None, env={})
        services = Services(cfg, sync=False)
        try:
            rows = [
                count_slide(services, name, images, optics, target, max_fields)
                for name, images in slides().items()
            ]
        finally:
            services.stop()
    return {
        "bundles": [_bundle_info(b) for b in bundles],
        "frame": {"width": width, "height": height, "um_per_px": SAMPLES_UM_PER_PX},
        "target": target,
        "max_fields": max_fields,
        "machine": f"{platform.machine()} {platform.python_version()}",
        "slides": rows,
    }


def _bundle_info(path: Path) -> dict[str, Any]:
    m = json.loads((path / "manifest.json").read_text())
    return {"name": m.get("name") or path.name, "version": m.get("version"), "sha256": m.get("sha256"),
            "cells": m.get("cells")}  # fmt: skip


def _pct(x: Any) -> str:
    return "–" if x is None else f"{x:.1f}%"


def markdown(res: dict[str, Any], command: str) -> str:
    f = res["frame"]
    um_w, um_h = f["width"] * f["um_per_px"], f["height"] * f["um_per_px"]
    lines = [
        "# Counting slides on the virtual microscope (cell bundles)",
        "",
        "Bundles (one ensemble): "
        + ", ".join(f"{b['name']} ({b['version']}, cells {b['cells']})" for b in res["bundles"])
        + f". Fields {f['width']} x {f['height']} px at "
        f"{f['um_per_px']} µm/px ({um_w:.0f} x {um_h:.0f} µm); each field stored once in the slide's sample "
        f"through `Services.classify_upload`; stop at {res['target']} counted white cells or "
        f"{res['max_fields']} fields. Machine: {res['machine']}.",
        "",
        f"| slide | fields | fields to {res['target']} counted | fields to {res['target']} detected | "
        "white cells detected | counted | unclassified | blasts | blast % (95% CI) | call | ms / field |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in res["slides"]:
        ci = _pct(r["blast_pct"])
        if r["ci_low_pct"] is not None:
            ci += f" ({_pct(r['ci_low_pct'])}–{_pct(r['ci_high_pct'])})"
        lines.append(
            f"| {r['slide']} | {r['fields']} | {r['fields_to_target'] or 'not reached'} | "
            f"{r['fields_to_detected_target'] or 'not reached'} | "
            f"{r['white_cells_detected']} | {r['counted']} | {r['unclassified']} | {r['blasts']} | {ci} | "
            f"{r['call_text']} | {r['ms_per_field']} |"
        )
    lines += [
        "",
        "Counted = white cells the classifier read (blast or not); detected = white cells the detector "
        "found (unclassified included): the fields a technician needs depend on both.",
        "",
        "Call rule: `device/cells/count.py` (suspicious when the blast share's 95% lower bound is above the "
        "2% threshold; 'no blasts seen' at 100 counted cells with none; else count more). Unclassified cells "
        "are counted apart.",
        "",
        "Caveat: a class's slide is its four sample images laid 2 x 2 and mirrored so the stage wraps "
        "around: fields overlap and mirrored copies repeat cells, so a cell may be counted more than once. "
        "These figures show the station's path and the models' calls on these images, not a clinical "
        "measurement. A screening aid for trained staff, not a diagnosis.",
        "",
        f"Reproduce: `{command}`",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", type=Path, action="append", help="a cell bundle (repeat: one ensemble)")
    ap.add_argument("--width", type=int, default=264)
    ap.add_argument("--height", type=int, default=196)
    ap.add_argument("--target", type=int, default=100)
    ap.add_argument("--max-fields", type=int, default=60)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/live_cells")
    args = ap.parse_args(argv)
    bundles = args.bundle or default_bundles()
    if not bundles:
        print("no cell bundle: pass --bundle DIR (models/cells-* or runs/bundles/cells-* with a model)")
        return 2
    res = run(bundles, args.width, args.height, args.target, args.max_fields)
    shown = " ".join(f"--bundle models/{b['name']}" for b in res["bundles"])
    if args.max_fields != 60 or args.target != 100 or (args.width, args.height) != (264, 196):
        shown += f" --max-fields {args.max_fields} --target {args.target}"
        shown += f" --width {args.width} --height {args.height}"
    command = f"PYTHONPATH=. .venv/bin/python benchmarks/live_cells.py {shown}"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(res, command.strip()))
    print(markdown(res, command.strip()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
