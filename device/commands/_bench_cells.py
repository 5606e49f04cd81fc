"""`smearscope bench`'s cell figures: a camera frame with 5, 20 and 50 white cells → field result.

- `frames`: 1920x1080 frames drawn with OpenCV at `um_per_px` (default 0.19 µm/px: a 365 x 205 µm
  field): a monolayer of red cells with 5, 20 or 50 white cells (round, oval and lobed nuclei)
  in free places. Each runs the station's path (`device.screening.CellScreen`: white reference + red-cell
  scale check → detection → per-cell crops and inference → field result) `reps` times; the median of
  each part is reported in ms and as a ratio to the inference time of the same run: detection, per-cell
  inference (ms per white cell) and everything else (scale check, white reference, crops, result).
- `batch`: the ensemble's inference per cell (`Ensemble.classify_tiles`), one invoke per cell vs all of
  a frame's cells in one `resize_tensor_input` batch (LiteRT), at 5, 20 and 50 cells, the frames'
  counts taken in turn so the batch is re-allocated for every frame as in the station.
- `static_cpu`: the daemon (all workers) on a replay camera showing one static 20-cell field at `fps`
  with a calibration profile: CPU seconds per wall second of this process (target <= 5% of a core),
  and how many fields were screened (a still field: 1).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

#: Red cells, plasma, cytoplasm and nuclei as in tests/test_cells_detect.py, with a little stain spread.
BACKGROUND = (236, 234, 238)
RBC = (222, 178, 190)
CYTOPLASM = (196, 196, 228)
NUCLEUS = (110, 60, 150)
COUNTS = (5, 20, 50)


@dataclass
class _Profile:
    name: str
    um_per_px: float


def compose(
    n_white: int, size: tuple[int, int] = (1920, 1080), um: float = 0.19, seed: int = 0
) -> np.ndarray:
    """A frame of `size` at `um` µm/px: red cells (7.5 µm) everywhere but around `n_white` white cells
    (11-15 µm; round, oval or three-lobed nuclei) on a grid of free places."""
    rng = np.random.default_rng(seed)
    w, h = size
    img = np.empty((h, w, 3), np.float32)
    img[:] = BACKGROUND

    def px(v: float) -> int:
        return max(1, round(v / um))

    pitch = 18.0  # µm between white-cell places
    places = [(x, y) for y in np.arange(12, h * um - 10, pitch) for x in np.arange(12, w * um - 10, pitch)]
    if n_white > len(places):
        raise ValueError(f"{n_white} white cells do not fit a {w}x{h} frame at {um} µm/px")
    chosen = [places[i] for i in rng.choice(len(places), n_white, replace=False)]
    for y in np.arange(4, h * um, 8.5):  # red cells, not where a white cell sits
        for x in np.arange(4 + (y % 17) / 2, w * um, 8.5):
            jx, jy = rng.normal(0, 0.6, 2)
            if all(np.hypot(x + jx - cx, y + jy - cy) > 11 for cx, cy in chosen):
                tint = np.clip(np.array(RBC) + rng.normal(0, 4, 3), 0, 255).tolist()
                cv2.circle(img, (px(x + jx), px(y + jy)), px(3.75), tint, -1, cv2.LINE_AA)
    for cx, cy in chosen:
        cell = float(rng.uniform(11, 15))
        cv2.circle(img, (px(cx), px(cy)), px(cell / 2), CYTOPLASM, -1, cv2.LINE_AA)
        shape = rng.integers(3)
        nuc = np.clip(np.array(NUCLEUS) + rng.normal(0, 8, 3), 0, 255).tolist()
        if shape == 0:
            cv2.circle(img, (px(cx), px(cy)), px(cell * 0.33), nuc, -1, cv2.LINE_AA)
        elif shape == 1:
            axes = (px(cell * 0.36), px(cell * 0.25))
            cv2.ellipse(img, (px(cx), px(cy)), axes, float(rng.uniform(0, 180)), 0, 360, nuc, -1, cv2.LINE_AA)
        else:
            for k in range(3):
                a = 2 * np.pi * k / 3 + rng.uniform(0, 1)
                lx, ly = cx + 2.2 * np.cos(a), cy + 2.2 * np.sin(a)
                cv2.circle(img, (px(lx), px(ly)), px(1.8), nuc, -1, cv2.LINE_AA)
    img += rng.normal(0, 3, img.shape)
    return cv2.GaussianBlur(np.clip(img, 0, 255).astype(np.uint8), (3, 3), 0.6)


def _median(xs: list[float]) -> float:
    return round(statistics.median(xs), 2)


def measure_frames(ensemble, settings, *, um: float, reps: int = 5) -> list[dict[str, Any]]:
    """Each part of the cell path per frame (medians over `reps` runs) and its ratio to the inference."""
    from device.screening.screen import CellScreen

    screen = CellScreen(ensemble, settings)
    rows = []
    for n in COUNTS:
        frame = compose(n, um=um, seed=n)
        screen.screen(frame, um, source="profile:bench")  # warm-up
        parts: dict[str, list[float]] = {k: [] for k in ("prepare", "detect", "crop", "infer", "result")}
        for _ in range(reps):
            r = screen.screen(frame, um, source="profile:bench")
            t = r.timings
            for k in parts:
                parts[k].append(getattr(t, f"{k}_ms"))
        white = len(r.white_records)
        med = {k: _median(v) for k, v in parts.items()}
        infer = med["infer"] or float("nan")
        rest = med["prepare"] + med["crop"] + med["result"]
        rows.append(
            {
                "white_cells_drawn": n,
                "white_cells_found": white,
                "state": r.state,
                "ms": {**med, "everything_else": round(rest, 2), "total": round(sum(med.values()), 2)},
                "infer_ms_per_cell": round(med["infer"] / white, 2) if white else None,
                "ratio_to_inference": {
                    "detection": round(med["detect"] / infer, 3),
                    "inference": 1.0,
                    "everything_else": round(rest / infer, 3),
                },
            }
        )
    return rows


def measure_batching(ensemble, reps: int = 5) -> list[dict[str, Any]]:
    """ms per cell, one invoke per cell vs one batched invoke per frame (re-allocation included)."""
    spec = ensemble.models[0].manifest.input
    rng = np.random.default_rng(0)
    crops = {
        n: [rng.integers(0, 256, (spec.height, spec.width, 3), dtype=np.uint8) for _ in range(n)]
        for n in COUNTS
    }
    times: dict[tuple[int, bool], list[float]] = {(n, b): [] for n in COUNTS for b in (False, True)}
    for batch in (False, True):  # warm-up
        ensemble.classify_tiles(crops[COUNTS[0]], with_cam=False, batch=batch)
    for _ in range(reps):
        for batch in (False, True):
            for n in COUNTS:
                t0 = time.perf_counter()
                ensemble.classify_tiles(crops[n], with_cam=False, batch=batch)
                times[(n, batch)].append((time.perf_counter() - t0) * 1000 / n)
    rows = []
    for n in COUNTS:
        one, batched = _median(times[(n, False)]), _median(times[(n, True)])
        rows.append(
            {
                "cells": n,
                "per_cell_invoke_ms_per_cell": one,
                "batched_ms_per_cell": batched,
                "faster": "batched" if batched < one else "per_cell_invoke",
            }
        )
    return rows


def measure_static_cpu(config, ensemble, *, um: float, fps: float, seconds: float) -> dict[str, Any]:
    """The whole daemon on one static 20-cell field at `fps`: CPU use of this process."""
    from device.services import Services

    with tempfile.TemporaryDirectory(prefix="smearscope-static-cells-") as frames:
        frame = compose(20, um=um, seed=20)
        cv2.imwrite(str(Path(frames) / "field.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        config.camera.source, config.camera.path, config.camera.fps = "replay", frames, fps
        services = Services(config, ensemble=ensemble, pace=True, sync=False)
        services.pipeline.profile = lambda: _Profile("bench", um)
        services.start()
        try:
            deadline = time.monotonic() + 120
            while services.status()["frames_classified"] < 1 and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(1.0)
            c0, w0 = time.process_time(), time.monotonic()
            f0 = services.status()["frames_captured"]
            time.sleep(seconds)
            cpu, wall = time.process_time() - c0, time.monotonic() - w0
            st = services.status()
            latest = services.live.latest_result()
        finally:
            services.stop()
    return {
        "fps": fps,
        "seconds": round(wall, 1),
        "frames_captured": st["frames_captured"] - f0,
        "fields_screened_total": st["frames_classified"],
        "frames_rejected": st["frames_rejected"],
        "republished": services.telemetry.counts.get("republished", 0),
        "field_line": latest[1].get("field_line") if latest else None,
        "cpu_percent_of_one_core": round(100 * cpu / wall, 1),
        "target_percent": 5.0,
    }


def measure(config, model_dir: str, *, um: float, fps: float, seconds: float) -> dict[str, Any]:
    from device.screening.screen import CELLS, ensemble_kind
    from device.screening.stages import ScreenSettings
    from device.services import load_ensemble

    ensemble = load_ensemble(config, [Path(model_dir)])
    if ensemble_kind(ensemble) != CELLS:
        return {"skipped": f"{model_dir} is not a cell bundle: pass --cells-model DIR"}
    settings = ScreenSettings.from_config(config)
    out: dict[str, Any] = {
        "model": ensemble.models[0].manifest.name,
        "input": ensemble.models[0].manifest.input.width,
        "frame": "1920x1080",
        "um_per_px": um,
        "interpreter_threads": config.classifier.threads,
        "frames": measure_frames(ensemble, settings, um=um),
        "batch": measure_batching(ensemble),
    }
    out["static_cpu"] = measure_static_cpu(config, ensemble, um=um, fps=fps, seconds=seconds)
    return out
