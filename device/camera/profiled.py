"""The configured camera with the active calibration profile applied (what the daemon reads).

After every open — and whenever the active profile changes — the profile's camera controls are set
(a profile without them gives the camera its automatic exposure and white balance back); every frame
gets the profile's software white gain before anything else sees it. Control changes asked for by
other threads (the admin page's colour calibration) are queued and applied by the capture thread,
because camera handles are not thread-safe.
"""

from __future__ import annotations

import contextlib
import logging
import queue
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any

import numpy as np

from device.camera.base import FrameSource
from device.camera.controls import check_controls
from device.camera.profiles import Profile, ProfileError, ProfileStore
from device.colour import apply_gains

log = logging.getLogger(__name__)
AUTO = {"AeEnable": True, "AwbEnable": True}


class ProfiledSource(FrameSource):
    def __init__(self, inner: FrameSource, profiles: ProfileStore):
        self.inner = inner
        self.profiles = profiles
        self.name = inner.name
        self.raw = False  # True: no software gain (the colour calibration measures the camera itself)
        self.applied: dict[str, Any] = {}  # the controls the camera took for the active profile
        self.ignored: list[str] = []
        self.profile_name: str | None = None
        self._gains: list[float] | None = None
        self._seen = -1
        self._had_controls = False
        self._requests: queue.Queue[tuple[Any, Future]] = queue.Queue()

    def describe(self) -> str:
        return self.inner.describe()

    def open(self) -> None:
        self.inner.open()
        self._seen = -1  # a reopened camera forgot its controls

    def close(self) -> None:
        self.inner.close()

    def _apply_profile(self) -> None:
        try:
            p: Profile | None = self.profiles.active()
        except ProfileError as exc:
            if self._seen != self.profiles.changes:
                log.error("calibration profiles: %s (keeping the previous settings)", exc)
            self._seen = self.profiles.changes
            return
        self._seen = self.profiles.changes
        self.profile_name = p.name if p else None
        self._gains = p.white_gains if p else None
        controls = dict(p.controls) if p and p.controls else {}
        if controls:
            self.applied = self.inner.set_controls(controls)
            self.ignored = sorted(set(controls) - set(self.applied))
            self._had_controls = True
            if self.ignored:
                log.warning("camera ignored the profile's controls %s", ", ".join(self.ignored))
        elif self._had_controls:
            self.inner.set_controls(AUTO)  # back to automatic exposure and white balance
            self.applied, self.ignored, self._had_controls = {}, [], False

    def reapply(self) -> None:
        """Set the active profile's controls again at the next frame (after a colour calibration
        left the camera in another state)."""
        self._had_controls = True
        self._seen = -1

    def _serve_requests(self) -> None:
        while True:
            try:
                what, fut = self._requests.get_nowait()
            except queue.Empty:
                return
            try:
                fut.set_result(self.inner.get_controls() if what is None else self.inner.set_controls(what))
            except Exception as exc:  # noqa: BLE001 - handed to the waiting thread
                fut.set_exception(exc)

    def request(self, controls: Mapping[str, Any] | None) -> Future:
        """Set (or with None, read) controls from another thread; done by the next read()."""
        fut: Future = Future()
        # checked here, so the asking thread gets the ControlError, not the capture thread
        self._requests.put((check_controls(controls) if controls is not None else None, fut))
        return fut

    def read(self) -> np.ndarray:
        with contextlib.suppress(ProfileError):  # logged once by _apply_profile; old settings stay
            self.profiles.active_name()  # refresh: notices a changed profiles file
        if self._seen != self.profiles.changes:
            self._apply_profile()
        self._serve_requests()
        rgb = self.inner.read()
        if self._gains and not self.raw:
            rgb = apply_gains(rgb, self._gains)
        return rgb

    def set_controls(self, controls: Mapping[str, Any]) -> dict[str, Any]:
        return self.inner.set_controls(check_controls(controls))

    def get_controls(self) -> dict[str, Any]:
        return self.inner.get_controls()
