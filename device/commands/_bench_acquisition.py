"""`smearscope bench`'s acquisition figures: one camera frame at a calibrated scale → field
result, and the daemon's CPU on a static field.

- `field`: a frame (default 1920x1080) rendered from the sample slides at `magnification` x the
  models' scale, classified as the daemon does (settle thumbnail, quality gate, scale check, white
  reference, rescale, nuclei, tiles, colour checks, per-tile inference, field rule, stitched heatmap).
  Reported: tiles per frame, the interpreters' invoke time per frame (the time inside `invoke()`
  during that very classification, so a busy machine slows both sides alike), and everything else
  per frame as a ratio of it (target <= 0.15): wall time as the daemon runs it (the red-cell scale
  check on the gate's thread while the tiles are inferred) and, for reference, all parts summed, and the
  wall time over the same tiles' invoke time with nothing beside them (`_alone`: the check's CPU slows
  the interpreters' threads, and that slowdown is then counted as overhead, not as invoke).
  `check_made_while_settling`: the same with the red-cell check already made on the frame before (a
  camera's settling field, `Pipeline._check_ahead`): only the colour checks run beside the interpreters.
- `batch`: the first model's invoke time per tile, one tile per invoke vs all tiles in one
  `resize_tensor_input` batch (LiteRT), so the pipeline can use the faster one.
- `static_cpu`: the daemon (all workers) on a replay camera showing one static field at `fps`: CPU
  seconds per wall second of this process, and how many frames were classified (should be 1).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from device.paths import SAMPLES_DIR
from device.preprocess import read_image


@dataclass
class _Profile:
    name: str
    um_per_px: float


def render_frame(size: tuple[int, int], magnification: float, samples: Path = SAMPLES_DIR) -> np.ndarray:
    """A (w, h) frame tiled from the sample fields (224 px, at the models' scale once resized to the
    model input), enlarged by `magnification`."""
    imgs = [read_image(p) for p in sorted(samples.glob("*.jpg"))]
    side = imgs[0].shape[0]
    w, h = size
    cell = max(8, round(side * magnification))
    nx, ny = -(-w // cell), -(-h // cell)
    rows = []
    for j in range(ny):
        row = [cv2.resize(imgs[(j * nx + i) % len(imgs)], (cell, cell)) for i in range(nx)]
        rows.append(np.hstack(row))
    return np.ascontiguousarray(np.vstack(rows)[:h, :w])


def _fields(config, dirs: list[str], model_um: float | None):
    from device.optics.analyse import AcquisitionSettings, FieldClassifier
    from device.services import load_ensemble

    ens = load_ensemble(config, [Path(d) for d in dirs])
    fc = FieldClassifier(ens, AcquisitionSettings.from_config(config))
    if model_um:
        fc.spec = dataclasses.replace(fc.spec, um_per_px=model_um)
    if not fc.scale_known:
        raise ValueError("the bundle declares no input.um_per_px: pass --model-um-per-px")
    return fc


def measure_field(config, dirs: list[str], *, model_um: float | None, size: tuple[int, int],
                  magnification: float, rounds: int = 15) -> dict[str, Any]:  # fmt: skip
    from device.pipeline.settle import thumbnail
    from device.quality import QualityThresholds, assess, shrink

    fc = _fields(config, dirs, model_um)
    u_model = fc.spec.um_per_px
    frame = render_frame(size, magnification)
    u_frame = u_model * fc.spec.width / (224 * magnification)  # a sample field is 224 px = one tile
    thresholds = QualityThresholds.from_config(config.quality)
    keys = ("gate", "scale_check", "prepare", "classify", "invoke", "wall")

    def one(ahead: bool, parts: dict[str, list[float]]) -> tuple[Any, Any]:
        # a camera's settling field: the red-cell check was made on the frame before (not timed here)
        early = fc.check_ahead(frame, u_frame, source="profile:bench") if ahead else None
        t0 = time.perf_counter()
        small = shrink(frame, thresholds.analysis_width)  # as the daemon's gate: one shrunk copy for both
        thumbnail(small)
        assess(small, thresholds)
        t1 = time.perf_counter()
        prepared = fc.prepare(frame, u_frame, source="profile:bench", defer_check=True)
        prepared.check_ahead = early
        t2 = time.perf_counter()
        # as the daemon: the colour checks and the scale check on the gate's thread while the
        # classifier infers the tiles
        checker = threading.Thread(target=fc.run_check, args=(prepared,))
        checker.start()
        before = sum(m.invoke_ns for m in fc.ensemble.models)
        analysis = fc.classify(prepared, with_cam=config.classifier.heatmap)
        # the time inside interpreter.invoke() during this very classification (same load)
        inv = (sum(m.invoke_ns for m in fc.ensemble.models) - before) / 1e9
        t3a = time.perf_counter()
        checker.join()
        t3 = time.perf_counter()
        for k, v in (("gate", t1 - t0), ("prepare", t2 - t1), ("classify", t3a - t2), ("invoke", inv),
                     ("scale_check", prepared.check_ms / 1000), ("wall", t3 - t0)):  # fmt: skip
            parts[k].append(v * 1000)
        return prepared, analysis

    # both ways in turn, round by round, so a drifting load touches both alike; the first round warms up
    runs: dict[bool, dict[str, list[float]]] = {a: {k: [] for k in keys} for a in (False, True)}
    for _ in range(rounds + 1):
        prepared, analysis = one(False, runs[False])
        one(True, runs[True])
    med, settled = ({k: float(np.median(v[1:])) for k, v in runs[a].items()} for a in (False, True))
    n_tiles = len(prepared.plan.selected)
    # The same tiles with nothing beside them: the interpreters' own time on an idle second core. The
    # check's CPU slows the 2-thread invoke above; measured against this, that slowdown counts as
    # "everything else" too.
    alone = []
    for _ in range(rounds):
        before = sum(m.invoke_ns for m in fc.ensemble.models)
        fc.ensemble.classify_tiles([t.rgb for t in prepared.plan.selected], with_cam=False,
                                   prechecks=prepared.prechecks or None)  # fmt: skip
        alone.append((sum(m.invoke_ns for m in fc.ensemble.models) - before) / 1e6)
    inv_alone = float(np.median(alone))
    sequential = med["gate"] + med["prepare"] + med["classify"] + med["scale_check"]
    other_wall = med["wall"] - med["invoke"]
    other_cpu = sequential - med["invoke"]
    s_other = settled["wall"] - settled["invoke"]
    return {
        "frame": f"{size[0]}x{size[1]}",
        "magnification": magnification,
        "frame_um_per_px": round(u_frame, 5),
        "models_um_per_px": u_model,
        "factor": round(prepared.plan.factor, 4),
        "tiles_total": len(prepared.plan.tiles),
        "tiles_classified": n_tiles,
        "tiles_dropped": prepared.plan.dropped,
        "models": len(fc.ensemble.models),
        "field_state": analysis.field.state,
        "scale_check": prepared.check.message,
        "field_ms": round(med["wall"], 1),
        "invoke_ms_per_frame": round(med["invoke"], 1),
        "invoke_ms_per_tile": round(med["invoke"] / max(1, n_tiles), 2),
        "other_ms_per_frame": round(other_wall, 1),
        "other_over_invoke": round(other_wall / med["invoke"], 3) if med["invoke"] else None,
        "other_over_invoke_sequential": round(other_cpu / med["invoke"], 3) if med["invoke"] else None,
        "invoke_ms_per_frame_alone": round(inv_alone, 1),
        "other_over_invoke_alone": round((med["wall"] - inv_alone) / inv_alone, 3) if inv_alone else None,
        "parts_ms": {
            "gate (thumbnail + quality)": round(med["gate"], 2),
            "prepare (white ref, rescale, nuclei, tiles, colour checks)": round(med["prepare"], 2),
            "scale check (in parallel with the inference)": round(med["scale_check"], 2),
            "classify (inference incl. invoke, rule, heatmap)": round(med["classify"], 2),
        },
        "target other_over_invoke <= 0.15": bool(med["invoke"] and other_wall / med["invoke"] <= 0.15),
        # a camera (settle_frames >= 2): the red-cell check was made while the field settled, so nothing
        # shares the cores with the interpreters; the replay camera (every frame a new field) is above
        "check_made_while_settling": {
            "field_ms": round(settled["wall"], 1),
            "invoke_ms_per_frame": round(settled["invoke"], 1),
            "other_ms_per_frame": round(s_other, 1),
            "other_over_invoke": round(s_other / settled["invoke"], 3) if settled["invoke"] else None,
            "other_over_invoke_alone": round((settled["wall"] - inv_alone) / inv_alone, 3)
            if inv_alone
            else None,
            "target other_over_invoke <= 0.15": bool(
                settled["invoke"] and s_other <= 0.15 * settled["invoke"]
            ),
        },
    }


def measure_batch(config, dirs: list[str], n: int, reps: int = 3) -> dict[str, Any]:
    """The first model: per-tile invokes vs one batched invoke of n tiles (ms per tile)."""
    from device.models.bundle import load_bundle
    from device.models.runtime import make_interpreter

    b = load_bundle(dirs[0])
    w, h = b.manifest.input.width, b.manifest.input.height
    out: dict[str, Any] = {"model": b.manifest.name, "tiles": n}
    rng = np.random.default_rng(0)
    for mode in ("per_tile", "batched"):
        interp, _ = make_interpreter(str(b.model_path), config.classifier.threads)
        inp = interp.get_input_details()[0]
        dtype = inp["dtype"]
        if mode == "batched":
            try:
                interp.resize_tensor_input(inp["index"], [n, h, w, 3])
                interp.allocate_tensors()
            except Exception as exc:  # noqa: BLE001 - a runtime without dynamic batch
                out["batched_error"] = str(exc)
                continue
            x = rng.integers(0, 255, (n, h, w, 3)).astype(dtype)
            interp.set_tensor(inp["index"], x)
            interp.invoke()
            t0 = time.perf_counter()
            for _ in range(reps):
                interp.set_tensor(inp["index"], x)
                interp.invoke()
            out["batched_ms_per_tile"] = round((time.perf_counter() - t0) * 1000 / reps / n, 2)
        else:
            x = rng.integers(0, 255, (1, h, w, 3)).astype(dtype)
            interp.set_tensor(inp["index"], x)
            interp.invoke()
            t0 = time.perf_counter()
            for _ in range(reps * n):
                interp.set_tensor(inp["index"], x)
                interp.invoke()
            out["per_tile_ms_per_tile"] = round((time.perf_counter() - t0) * 1000 / reps / n, 2)
    if "batched_ms_per_tile" in out:
        out["faster"] = "batched" if out["batched_ms_per_tile"] < out["per_tile_ms_per_tile"] else "per_tile"
    return out


def measure_static_cpu(config, dirs: list[str], *, model_um: float | None, size: tuple[int, int],
                       magnification: float, fps: float, seconds: float) -> dict[str, Any]:  # fmt: skip
    """The whole daemon on one static field at `fps`: CPU use of this process."""
    import tempfile

    from device.services import Services

    with tempfile.TemporaryDirectory(prefix="smearscope-static-") as frames:
        frame = render_frame(size, magnification)
        cv2.imwrite(str(Path(frames) / "field.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        config.camera.source, config.camera.path, config.camera.fps = "replay", frames, fps
        config.classifier.models = list(dirs)
        services = Services(config, pace=True, sync=False)
        fc = services.pipeline.fields
        if model_um:
            fc.spec = dataclasses.replace(fc.spec, um_per_px=model_um)
        u_frame = fc.spec.um_per_px * fc.spec.width / (224 * magnification)
        services.pipeline.profile = lambda: _Profile("bench", u_frame)
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
        finally:
            services.stop()
    return {
        "fps": fps,
        "seconds": round(wall, 1),
        "frames_captured": st["frames_captured"] - f0,
        "frames_classified_total": st["frames_classified"],
        "republished": services.telemetry.counts.get("republished", 0),
        "cpu_percent_of_one_core": round(100 * cpu / wall, 1),
    }
