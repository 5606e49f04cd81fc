"""The camera controls a profile or a calibration may set, checked before any camera sees them.

Names and units are libcamera's (`device.camera.base.CONTROLS`): AwbEnable / AeEnable (true/false),
ColourGains (red gain, blue gain), ExposureTime (µs), AnalogueGain (x; a UVC camera's own gain units
through OpenCV, whose range starts at 0). Every value is typed, finite and in range; an unknown name is
refused rather than silently skipped, with a message naming the control.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from device.bounds import Bounds, BoundsError
from device.camera.base import CONTROLS, CameraError

# Wide enough for every camera the station drives (a 10 s exposure, libcamera's 0..32 colour gains,
# a UVC gain scale up to 1024), narrow enough to refuse a sign slip or a unit mix-up.
EXPOSURE_US = Bounds(0, 10_000_000, "µs", lo_open=True)
ANALOGUE_GAIN = Bounds(0, 1024, "(x, or the camera's own gain units)")
COLOUR_GAIN = Bounds(0, 32, "(a gain)", lo_open=True)
FLAGS = ("AwbEnable", "AeEnable")


class ControlError(CameraError, ValueError):
    """A control name or value cannot be sent to a camera; the message names it."""


def check_controls(controls: Any, where: str = "controls") -> dict[str, Any]:
    """A clean copy of `controls` (ColourGains as a [red, blue] list of floats) or ControlError."""
    if not isinstance(controls, Mapping):
        raise ControlError(f"{where}: must be a table of camera controls, not {controls!r}")
    unknown = sorted(set(controls) - set(CONTROLS))
    if unknown:
        raise ControlError(f"{where}: unknown camera controls {unknown} (known: {', '.join(CONTROLS)})")
    out: dict[str, Any] = {}
    try:
        for key, value in controls.items():
            name = f"{where}.{key}"
            if key in FLAGS:
                if not isinstance(value, bool):
                    raise BoundsError(f"{name}: must be true or false, not {value!r}")
                out[key] = value
            elif key == "ColourGains":
                if isinstance(value, str | bytes) or not hasattr(value, "__len__") or len(value) != 2:
                    raise BoundsError(f"{name}: must be two gains [red, blue], not {value!r}")
                out[key] = [COLOUR_GAIN.check(f"{name}[{i}]", v) for i, v in enumerate(value)]
            elif key == "ExposureTime":
                out[key] = EXPOSURE_US.check(name, value)
            else:
                out[key] = ANALOGUE_GAIN.check(name, value)
    except BoundsError as exc:
        raise ControlError(str(exc)) from None
    return out
