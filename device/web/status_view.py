"""The status page's figures in words: every figure of `/api/status` (`Services.status()`) with a
label in the reader's language, rounded, with its unit. The JSON keeps the raw numbers.

Figures the page does not know yet (a new key) still show, under their key, so nothing is hidden.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from flask_babel import format_decimal, format_number, format_timedelta, gettext

from device.web.i18n import scale_text, when

#: Keys that are words for machines only (the disclaimer is on every page already).
HIDDEN = frozenset({"disclaimer", "tiling", "scale", "storage"})


@dataclass(frozen=True)
class Figure:
    label: str
    text: str
    bad: bool = False


@dataclass
class Section:
    title: str
    figures: list[Figure] = field(default_factory=list)
    table: list[list[str]] | None = None  # a header row then one row per item (workers)


def count(n: Any) -> str:
    return format_number(int(n)) if isinstance(n, int | float) else "—"


def per_second(x: Any) -> str:
    if not isinstance(x, int | float):
        return "—"
    return gettext("%(n)s a second", n=format_decimal(float(x), format="0.0"))


def millis(x: Any) -> str:
    """A duration in ms: whole milliseconds below 10 s, seconds with one decimal above."""
    if not isinstance(x, int | float):
        return gettext("not measured yet")
    if x >= 10_000:
        return f"{format_decimal(x / 1000, format='0.0')} s"
    return f"{format_number(round(x))} ms"


def size(n: Any) -> str:
    if not isinstance(n, int | float):
        return "—"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{format_decimal(n / scale, format='0.0')} {unit}"
    return f"{format_number(int(n))} B"


def duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "—"
    return format_timedelta(timedelta(seconds=float(seconds)), threshold=1.1)


def yes_no(v: Any) -> str:
    return gettext("yes") if v else gettext("no")


def plain(v: Any) -> str:
    """Any other value, readable: numbers rounded (3 significant digits), lists joined, none as —."""
    if v is None or v == "":
        return "—"
    if isinstance(v, bool):
        return yes_no(v)
    if isinstance(v, int):
        return format_number(v)
    if isinstance(v, float):
        return format_decimal(v, format="#,##0.0" if abs(v) >= 100 else "0.###")
    if isinstance(v, dict):
        return "; ".join(f"{k.replace('_', ' ')}: {plain(x)}" for k, x in v.items())
    if isinstance(v, list | tuple):
        return ", ".join(plain(x) for x in v) or "—"
    return str(v)


def _camera(cam: Any) -> Figure:
    if not isinstance(cam, dict):
        return Figure(gettext("Camera"), plain(cam))
    states = {
        "running": gettext("running"),
        "reopening": gettext("reopening"),
        "stopped": gettext("stopped"),
        "starting": gettext("starting"),
        "failed": gettext("failed"),
    }
    state = cam.get("state")
    text = " — ".join(x for x in (str(cam.get("source") or ""), states.get(state, state or "")) if x)
    if cam.get("error"):
        text += f" ({cam['error']})"
    return Figure(gettext("Camera"), text or "—", bad=bool(cam.get("error")))


def stage_words(stage: Any) -> str:
    """A pipeline worker's stage (device/pipeline/pipeline.py) in the reader's words."""
    words = {
        "idle": gettext("idle"),
        "inference": gettext("classifying"),
        "opening camera": gettext("opening the camera"),
        "paused": gettext("paused"),
        "quality checks": gettext("checking the picture"),
        "reading a frame": gettext("reading a frame"),
        "scale check ahead": gettext("checking the scale"),
        "scale check and tiles": gettext("checking the scale"),
        "scale check": gettext("checking the scale"),
        "settle check": gettext("checking the field is still"),
        "store policy": gettext("deciding what to keep"),
        "waiting for a frame": gettext("waiting for a frame"),
        "waiting for a result": gettext("waiting for a result"),
        "waiting for the classifier": gettext("waiting for the classifier"),
        "waiting for the scale check": gettext("waiting for the scale check"),
        "writing a record": gettext("writing a record"),
    }
    return words.get(stage, plain(stage))


def _sync(s: dict[str, Any]) -> Section:
    sec = Section(gettext("Sending to the hub"))
    if not s.get("enabled"):
        sec.figures.append(Figure(gettext("Sync"), gettext("off (this station keeps its records)")))
        return sec
    sec.figures += [
        Figure(gettext("Hub"), plain(s.get("hub_url"))),
        Figure(gettext("State"), plain(s.get("state"))),
        Figure(gettext("Last sent"), when(s.get("last_success")) or gettext("never")),
        Figure(gettext("Waiting to be sent"), count(s.get("pending"))),
        Figure(gettext("Sent"), count(s.get("synced"))),
        Figure(gettext("Refused by the hub"), count(s.get("rejected")), bad=bool(s.get("rejected"))),
        Figure(gettext("Last sync error"), plain(s.get("last_error")), bad=bool(s.get("last_error"))),
    ]
    skew = s.get("clock_skew_s")
    if isinstance(skew, int | float):
        sec.figures.append(
            Figure(gettext("Station clock ahead of the hub's by"), duration(skew), bad=abs(skew) > 120)
        )
    return sec


Take = Callable[[str], Any]


def sections(status: dict[str, Any]) -> list[Section]:
    """The status body as labelled sections, in the order a technician reads them; what no section
    names is listed last under its raw key, so no figure is hidden."""
    s = dict(status)
    used: set[str] = set(HIDDEN)

    def take(key: str) -> Any:
        used.add(key)
        return s.get(key)

    out = [_camera_section(take), _storage_section(take), _sync(take("sync") or {}), _models_section(take)]
    cal = take("calibration") or {}
    if cal:
        out.append(_calibration_section(cal))
    station = _station_section(take, bool(s.get("last_error")))
    rest = {k: v for k, v in s.items() if k not in used}
    station.figures += [Figure(k.replace("_", " "), plain(v)) for k, v in rest.items()]
    out.append(station)
    return out


def _camera_section(take: Take) -> Section:
    camera = Section(gettext("Camera and classifier"))
    camera.figures += [
        _camera(take("camera")),
        Figure(gettext("Camera frames"), per_second(take("fps"))),
        Figure(gettext("Fields classified"), per_second(take("classified_fps"))),
        Figure(gettext("Time to classify a field (median)"), millis(take("inference_ms_p50"))),
        Figure(gettext("Time to classify a field (slowest 5 %)"), millis(take("inference_ms_p95"))),
        Figure(gettext("Frame to result (median)"), millis(take("latency_ms_p50"))),
        Figure(gettext("Frame to result (slowest 5 %)"), millis(take("latency_ms_p95"))),
        Figure(gettext("Frames taken"), count(take("frames_captured"))),
        Figure(gettext("Frames classified"), count(take("frames_classified"))),
        Figure(gettext("Frames refused by the quality check"), count(take("frames_rejected"))),
        Figure(gettext("Frames skipped (classifier busy)"), count(take("frames_dropped"))),
        Figure(gettext("Running for"), duration(take("uptime_s"))),
    ]
    return camera


def _storage_section(take: Take) -> Section:
    storage = Section(gettext("Storage"))
    full = bool(take("disk_full"))
    dropped = take("store_dropped")
    storage.figures += [
        Figure(gettext("Disk space free"), size(take("disk_free_bytes")), bad=full),
        Figure(gettext("Disk full"), yes_no(full), bad=full),
        Figure(gettext("Records"), count(take("records_total"))),
        Figure(gettext("Records stored since start"), count(take("records_stored"))),
        Figure(gettext("Not sent to the hub yet"), count(take("unsynced"))),
        Figure(gettext("Waiting to be written"), count(take("store_queue"))),
        Figure(gettext("Not written (queue full)"), count(dropped), bad=bool(dropped)),
    ]
    return storage


def _models_section(take: Take) -> Section:
    models = Section(gettext("Models"))
    for m in take("models") or []:
        if isinstance(m, dict):
            models.figures.append(Figure(str(m.get("name")), f"sha256 {str(m.get('sha256') or '')[:12]}…"))
        else:
            models.figures.append(Figure(gettext("Model"), plain(m)))
    sig = take("model_signatures") or {}
    if sig:
        models.figures.append(
            Figure(gettext("Signatures checked"), yes_no(sig.get("ok")), bad=not sig.get("ok"))
        )
    update = take("model_update")
    if isinstance(update, dict):
        failed = update.get("last_error")
        models.figures += [
            Figure(gettext("Model updates"), plain(update.get("policy"))),
            Figure(gettext("Update waiting for an admin"), plain(update.get("staged"))),
            Figure(gettext("Last update check"), when(update.get("last_check")) or gettext("never")),
            Figure(gettext("Last update error"), plain(failed), bad=bool(failed)),
        ]
    return models


def _calibration_section(cal: dict[str, Any]) -> Section:
    calibration = Section(gettext("Calibration"))
    um = cal.get("um_per_px")
    active = plain(cal.get("profile")) if cal.get("profile") else gettext("none")
    calibration.figures += [
        Figure(gettext("Active profile"), active),
        Figure(gettext("Camera's scale"), f"{scale_text(um)} µm/px" if um else "—"),
        Figure(gettext("Measured by"), plain(cal.get("method"))),
        Figure(gettext("Profile file problem"), plain(cal.get("error")), bad=bool(cal.get("error"))),
    ]
    return calibration


def _station_section(take: Take, error: bool) -> Section:
    station = Section(gettext("Station"))
    station.figures += [
        Figure(gettext("Software version"), plain(take("version"))),
        Figure(gettext("Station id"), plain(take("device_id"))),
        Figure(gettext("Last error"), plain(take("last_error")), bad=error),
    ]
    workers = take("workers")
    if isinstance(workers, list) and workers:
        station.table = [[gettext("Worker"), gettext("Running"), gettext("Doing"), gettext("Restarts")]]
        station.table += [_worker_row(w) for w in workers if isinstance(w, dict)]
    return station


def _worker_row(w: dict[str, Any]) -> list[str]:
    return [str(w.get("name")), yes_no(w.get("alive")), stage_words(w.get("stage")), count(w.get("restarts"))]
