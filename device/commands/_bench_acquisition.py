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


#: A sample field is this many pixels square: one model tile at the models' scale.
SAMPLE_FIELD_PX = 224
#: Everything but the interpreters' invoke should cost at most this fraction of the invoke time.
TARGET_OTHER_OVER_INVOKE = 0.15
_PARTS = ("gate", "scale_check", "prepare", "classify", "invoke", "wall")


@dataclass
class _Field:
    """One benchmark field: the classifier, the frame and its scale."""

    fc: Any  # device.optics.analyse.FieldClassifier
    frame: np.ndarray
    u_frame: float  # the frame's µm/px
    thresholds: Any  # device.quality.QualityThresholds
    heatmap: bool


def _invoke_ns(fc) -> int:
    return sum(m.invoke_ns for m in fc.ensemble.models)


def _time_one_field(f: _Field, ahead: bool, parts: dict[str, list[float]]) -> tuple[Any, Any]:
    """Classify the frame once as the daemon does, appending each part's milliseconds to `parts`."""
    from device.pipeline.settle import thumbnail
    from device.quality import assess, shrink

    fc = f.fc
    # a camera's settling field: the red-cell check was made on the frame before (not timed here)
    early = fc.check_ahead(f.frame, f.u_frame, source="profile:bench") if ahead else None
    t0 = time.perf_counter()
    small = shrink(f.frame, f.thresholds.analysis_width)  # as the daemon's gate: one shrunk copy for both
    thumbnail(small)
    assess(small, f.thresholds)
    t1 = time.perf_counter()
    prepared = fc.prepare(f.frame, f.u_frame, source="profile:bench", defer_check=True)
    prepared.check_ahead = early
    t2 = time.perf_counter()
    # as the daemon: the colour checks and the scale check on the gate's thread while the
    # classifier infers the tiles
    checker = threading.Thread(target=fc.run_check, args=(prepared,))
    checker.start()
    before = _invoke_ns(fc)
    analysis = fc.classify(prepared, with_cam=f.heatmap)
    # the time inside interpreter.invoke() during this very classification (same load)
    inv = (_invoke_ns(fc) - before) / 1e9
    t3a = time.perf_counter()
    checker.join()
    t3 = time.perf_counter()
    for k, v in (("gate", t1 - t0), ("prepare", t2 - t1), ("classify", t3a - t2), ("invoke", inv),
                 ("scale_check", prepared.check_ms / 1000), ("wall", t3 - t0)):  # fmt: skip
        parts[k].append(v * 1000)
    return prepared, analysis


def _invoke_alone_ms(fc, prepared, rounds: int) -> float:
    """The same tiles with nothing beside them: the interpreters' own time on an idle second core. The
    check's CPU slows the 2-thread invoke of a field; measured against this, that slowdown counts as
    "everything else" too."""
    alone = []
    for _ in range(rounds):
        before = _invoke_ns(fc)
        fc.ensemble.classify_tiles([t.rgb for t in prepared.plan.selected], with_cam=False,
                                   prechecks=prepared.prechecks or None)  # fmt: skip
        alone.append((_invoke_ns(fc) - before) / 1e6)
    return float(np.median(alone))


def _ratio(num: float, den: float) -> float | None:
    return round(num / den, 3) if den else None


def _settled_report(settled: dict[str, float], inv_alone: float) -> dict[str, Any]:
    """A camera (settle_frames >= 2): the red-cell check was made while the field settled, so nothing
    shares the cores with the interpreters; the replay camera (every frame a new field) is the other."""
    s_other = settled["wall"] - settled["invoke"]
    return {
        "field_ms": round(settled["wall"], 1),
        "invoke_ms_per_frame": round(settled["invoke"], 1),
        "other_ms_per_frame": round(s_other, 1),
        "other_over_invoke": _ratio(s_other, settled["invoke"]),
        "other_over_invoke_alone": _ratio(settled["wall"] - inv_alone, inv_alone),
        f"target other_over_invoke <= {TARGET_OTHER_OVER_INVOKE}": bool(
            settled["invoke"] and s_other <= TARGET_OTHER_OVER_INVOKE * settled["invoke"]
        ),
    }


def _field_report(f: _Field, prepared, analysis, med: dict[str, float], inv_alone: float) -> dict[str, Any]:
    fc, n_tiles = f.fc, len(prepared.plan.selected)
    sequential = med["gate"] + med["prepare"] + med["classify"] + med["scale_check"]
    other_wall = med["wall"] - med["invoke"]
    return {
        "frame_um_per_px": round(f.u_frame, 5),
        "models_um_per_px": fc.spec.um_per_px,
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
        "other_over_invoke": _ratio(other_wall, med["invoke"]),
        "other_over_invoke_sequential": _ratio(sequential - med["invoke"], med["invoke"]),
        "invoke_ms_per_frame_alone": round(inv_alone, 1),
        "other_over_invoke_alone": _ratio(med["wall"] - inv_alone, inv_alone),
        "parts_ms": {
            "gate (thumbnail + quality)": round(med["gate"], 2),
            "prepare (white ref, rescale, nuclei, tiles, colour checks)": round(med["prepare"], 2),
            "scale check (in parallel with the inference)": round(med["scale_check"], 2),
            "classify (inference incl. invoke, rule, heatmap)": round(med["classify"], 2),
        },
        f"target other_over_invoke <= {TARGET_OTHER_OVER_INVOKE}": bool(
            med["invoke"] and other_wall / med["invoke"] <= TARGET_OTHER_OVER_INVOKE
        ),
    }


def measure_field(config, dirs: list[str], *, model_um: float | None, size: tuple[int, int],
                  magnification: float, rounds: int = 15) -> dict[str, Any]:  # fmt: skip
    from device.quality import QualityThresholds

    fc = _fields(config, dirs, model_um)
    u_frame = fc.spec.um_per_px * fc.spec.width / (SAMPLE_FIELD_PX * magnification)
    f = _Field(fc, render_frame(size, magnification), u_frame, QualityThresholds.from_config(config.quality),
               config.classifier.heatmap)  # fmt: skip
    # both ways in turn, round by round, so a drifting load touches both alike; the first round warms up
    runs: dict[bool, dict[str, list[float]]] = {a: {k: [] for k in _PARTS} for a in (False, True)}
    for _ in range(rounds + 1):
        prepared, analysis = _time_one_field(f, False, runs[False])
        _time_one_field(f, True, runs[True])
    med, settled = ({k: float(np.median(v[1:])) for k, v in runs[a].items()} for a in (False, True))
    inv_alone = _invoke_alone_ms(fc, prepared, rounds)
    return {
        "frame": f"{size[0]}x{size[1]}",
        "magnification": magnification,
        **_field_report(f, prepared, analysis, med, inv_alone),
        "check_made_while_settling": _settled_report(settled, inv_alone),
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
