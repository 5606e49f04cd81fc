"""Calibration procedures shared by `smearscope calibrate` and the admin page: the automatic scale
(red-cell estimate over N live frames), the stage micrometer, and the colour reference (exposure and
white balance fixed on a blank area of the slide, OpenFlexure-style).

Each takes callables (`read_frame`, `set_controls`, `get_controls`) rather than a camera, so the
command drives a camera it opened itself and the daemon drives its running one through the capture
thread (`device.camera.profiled.ProfiledSource`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from device.config import CalibrationConfig, OpticsConfig
from device.errors import SmearscopeError

ReadFrame = Callable[[], np.ndarray]
SetControls = Callable[[Mapping[str, Any]], dict[str, Any]]
Progress = Callable[[int, int, str], None]
#: The `[calibration]` defaults and the red-cell ruler; device/config.py holds them (and their ranges).
_CALIBRATION_DEFAULTS = CalibrationConfig()
RBC_DIAMETER_UM = OpticsConfig().rbc_diameter_um
MIN_MICROMETER_PX = 20.0  # two points closer than this give a useless scale (a 1 px click = 5%)


class CalibrationRefused(SmearscopeError):
    """The measurement is not trustworthy; the message says why and what to do."""


# -- automatic scale ---------------------------------------------------------------------------


@dataclass
class AutoResult:
    um_per_px: float
    diameter_px: float
    spread: float  # IQR / median of the per-frame diameters
    n_frames: int
    n_confident: int
    diameters: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "um_per_px": self.um_per_px,
            "diameter_px": self.diameter_px,
            "spread": self.spread,
            "n_frames": self.n_frames,
            "n_confident": self.n_confident,
        }


def _default_estimator():
    try:
        from device.optics.scale import estimate_scale  # the red-cell estimator (OpenCV only)
    except ImportError as exc:
        raise CalibrationRefused(
            "this smearscope has no red-cell scale estimator: "
            "calibrate with a stage micrometer or a typed value"
        ) from exc
    return estimate_scale


def summarise(estimates: list[Any], *, rbc_um: float, min_confident: float, max_spread: float) -> AutoResult:
    """Robust median and spread of per-frame `ScaleEstimate`s; refused when too few are confident or
    they disagree."""
    n = len(estimates)
    good = [float(e.diameter_px) for e in estimates if e.confident and e.diameter_px]
    need = max(3, math.ceil(min_confident * n))
    if len(good) < need:
        reasons = sorted({str(e.reason) for e in estimates if not e.confident and e.reason})
        why = f" ({'; '.join(reasons[:3])})" if reasons else ""
        raise CalibrationRefused(
            f"only {len(good)} of {n} frames gave a confident red-cell estimate, {need} needed{why}. "
            "Move to a thin area of the smear where red cells lie side by side, focus, and try again "
            "— or calibrate with a stage micrometer"
        )
    d = np.asarray(good)
    med = float(np.median(d))
    q1, q3 = np.percentile(d, [25, 75])
    spread = float((q3 - q1) / med)
    if spread > max_spread:
        raise CalibrationRefused(
            f"the red-cell estimates disagree: spread {100 * spread:.1f}% over {len(good)} frames, "
            f"at most {100 * max_spread:.0f}% allowed. Did the objective or focus change? Stay on thin, "
            "focused areas of one smear and try again — or calibrate with a stage micrometer"
        )
    return AutoResult(rbc_um / med, med, spread, n, len(good), [round(x, 3) for x in good])


def auto_scale(
    read_frame: ReadFrame,
    frames: int,
    *,
    rbc_um: float = RBC_DIAMETER_UM,
    min_confident: float = _CALIBRATION_DEFAULTS.min_confident,
    max_spread: float = _CALIBRATION_DEFAULTS.max_spread,
    estimate: Callable[..., Any] | None = None,
    progress: Progress | None = None,
) -> AutoResult:
    """The red-cell estimator over `frames` live frames."""
    estimate = estimate or _default_estimator()
    got = []
    for i in range(frames):
        e = estimate(read_frame(), rbc_um=rbc_um)
        got.append(e)
        if progress is not None:
            what = f"{e.diameter_px:.1f} px per red cell" if e.confident and e.diameter_px else "cannot tell"
            progress(i + 1, frames, what)
    return summarise(got, rbc_um=rbc_um, min_confident=min_confident, max_spread=max_spread)


# -- stage micrometer --------------------------------------------------------------------------


def micrometer_scale(
    length_um: float, p1: tuple[float, float], p2: tuple[float, float]
) -> tuple[float, float]:
    """(µm per px, distance in px) of a known length marked by two points on a frozen frame."""
    if not (isinstance(length_um, int | float) and math.isfinite(length_um) and length_um > 0):
        raise CalibrationRefused("the micrometer length must be a positive number of µm")
    px = math.dist(p1, p2)
    if px < MIN_MICROMETER_PX:
        raise CalibrationRefused(
            f"the two points are {px:.1f} px apart: mark them at least {MIN_MICROMETER_PX:.0f} px apart "
            "(best: a long stretch of the scale, across most of the frame)"
        )
    return length_um / px, px


# -- colour reference --------------------------------------------------------------------------


@dataclass
class WhiteResult:
    controls: dict[str, Any]  # what the camera applied (values read back), kept in the profile
    ignored: list[str]  # asked for but not applied by this camera
    white_gains: list[float] | None  # software RGB gains for what the camera could not fix
    before: list[float]  # background RGB before
    after: list[float]  # background RGB after the camera controls (before the software gain)

    def to_dict(self) -> dict[str, Any]:
        return {
            "controls": self.controls,
            "ignored": self.ignored,
            "white_gains": self.white_gains,
            "before": self.before,
            "after": self.after,
        }

    def describe(self) -> str:
        took = ", ".join(f"{k}={_fmt(v)}" for k, v in self.controls.items()) or "none"
        out = f"camera controls that took effect: {took}"
        if self.ignored:
            out += f"; ignored by this camera: {', '.join(self.ignored)}"
        gains = ", ".join(f"{g:.3f}" for g in self.white_gains) if self.white_gains else "none needed"
        return out + f"; software white gain (R, G, B): {gains}"


def _fmt(v: Any) -> str:
    if isinstance(v, list | tuple):
        return "(" + ", ".join(_fmt(x) for x in v) + ")"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _plain(v: Any) -> Any:
    """JSON/TOML-safe: numpy scalars → Python numbers, tuples → lists."""
    if isinstance(v, tuple | list):
        return [_plain(x) for x in v]
    if isinstance(v, bool | np.bool_):
        return bool(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    return v


def background_level(rgb: np.ndarray) -> np.ndarray:
    """Mean RGB of a blank field (central 80%, so vignetted corners count less); refused when the
    field is not blank (cells or debris in view)."""
    h, w = rgb.shape[:2]
    c = rgb[h // 10 : h - h // 10, w // 10 : w - w // 10].reshape(-1, 3).astype(np.float32)
    med = np.median(c, axis=0)
    off = np.abs(c - med).max(axis=1) > 40
    if off.mean() > 0.05:
        raise CalibrationRefused(
            f"the field is not blank ({100 * off.mean():.0f}% of it differs from the background): "
            "move to an empty area of the slide (beside the smear) and try again"
        )
    return c[~off].mean(axis=0)


#: New camera controls show a few frames later: frames read and dropped before measuring.
WHITE_SETTLE_FRAMES = 3
#: Exposure and gain adjustments before the colour reference settles for what it reached.
WHITE_ITERATIONS = 6
#: Every channel within this many grey levels of the target ends the adjustment.
WHITE_TOLERANCE_GREY = 4.0
#: A background channel at or above this grey level is clipped (white).
CLIPPED_GREY = 253
#: A background channel below this grey level is too dark to balance.
MIN_BACKGROUND_GREY = 40
#: The exposure factor applied when the background is clipped (its level says nothing then).
CLIPPED_EXPOSURE_FACTOR = 0.5
#: One exposure step changes the exposure time by at most this factor (either way).
MAX_EXPOSURE_STEP = 4.0
#: The software white gains are clamped to [1 / MAX_SOFTWARE_GAIN, MAX_SOFTWARE_GAIN].
MAX_SOFTWARE_GAIN = 5.0
#: Software gains all within this of 1 are not worth keeping (no gain is stored).
SOFTWARE_GAIN_DEADBAND = 0.02


def _frozen_controls(current: Mapping[str, Any]) -> dict[str, Any]:
    """Auto exposure and white balance off, at the values the camera runs now."""
    wanted: dict[str, Any] = {"AeEnable": False, "AwbEnable": False}
    wanted.update({k: current[k] for k in ("ExposureTime", "AnalogueGain", "ColourGains") if k in current})
    wanted.setdefault("ColourGains", (1.0, 1.0))
    return wanted


def _white_step(applied: Mapping[str, Any], m: np.ndarray, target: float) -> dict[str, Any]:
    """The next controls: colour gains bring red and blue to green, exposure brings green to `target`."""
    step: dict[str, Any] = {}
    if "ColourGains" in applied:
        r, b = applied["ColourGains"]
        step["ColourGains"] = (float(r * m[1] / m[0]), float(b * m[1] / m[2]))
    if "ExposureTime" in applied:
        if m.max() >= CLIPPED_GREY:
            factor = CLIPPED_EXPOSURE_FACTOR
        else:
            factor = float(np.clip(target / max(m[1], 1.0), 1 / MAX_EXPOSURE_STEP, MAX_EXPOSURE_STEP))
        step["ExposureTime"] = float(applied["ExposureTime"]) * factor
    return step


def _software_gains(m: np.ndarray, target: float) -> list[float] | None:
    """What the camera could not reach, as per-channel gains (None when none is needed); refuses a
    clipped or dark background."""
    if m.max() >= CLIPPED_GREY:
        raise CalibrationRefused(
            "the background is clipped (white): turn the lamp down or the exposure cannot be set; try again"
        )
    if m.min() < MIN_BACKGROUND_GREY:
        raise CalibrationRefused("the background is too dark: turn the lamp up (or open the condenser)")
    gains = [float(np.clip(target / x, 1 / MAX_SOFTWARE_GAIN, MAX_SOFTWARE_GAIN)) for x in m]
    return [round(g, 4) for g in gains] if max(abs(g - 1.0) for g in gains) > SOFTWARE_GAIN_DEADBAND else None


def white_reference(
    read_frame: ReadFrame,
    set_controls: SetControls,
    get_controls: Callable[[], dict[str, Any]],
    *,
    target: float = _CALIBRATION_DEFAULTS.white_target,
    settle: int = WHITE_SETTLE_FRAMES,
    iterations: int = WHITE_ITERATIONS,
    progress: Progress | None = None,
) -> WhiteResult:
    """Freeze auto exposure and auto white balance at their current values, then iterate the exposure
    (green → `target`) and the colour gains (red and blue → green) on a blank field; what the camera
    cannot reach becomes a software gain (target / background, per channel)."""

    def frame() -> np.ndarray:
        for _ in range(settle):  # new controls show a few frames later
            read_frame()
        return read_frame()

    def say(i: int, what: str) -> None:
        if progress is not None:
            progress(i, iterations + 1, what)

    before = background_level(frame())
    say(0, f"background before: {_fmt([float(x) for x in before])}")
    wanted = _frozen_controls(get_controls())
    applied = dict(set_controls(wanted))
    asked = set(wanted)
    m = before
    for i in range(iterations):
        m = background_level(frame())
        say(i + 1, f"background: {_fmt([float(x) for x in m])}")
        if np.all(np.abs(m - target) <= WHITE_TOLERANCE_GREY):
            break
        step = _white_step(applied, m, target)
        if not step:
            break
        asked |= set(step)
        got = set_controls(step)
        if not got:
            break
        applied.update(got)
    keep = _software_gains(m, target)
    return WhiteResult(
        controls={k: _plain(v) for k, v in applied.items()},
        ignored=sorted(asked - set(applied)),
        white_gains=keep,
        before=[round(float(x), 1) for x in before],
        after=[round(float(x), 1) for x in m],
    )
