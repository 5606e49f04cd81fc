"""Named calibration profiles, one per camera + objective (e.g. "HQ cam, 100x oil").

A profile says how large one camera pixel is on the slide (`um_per_px`), how that was measured
(`auto` red-cell estimate over live frames, stage `micrometer`, or `typed`), and — when the colour
reference was fixed with `smearscope calibrate --white` — the camera controls to apply (exposure,
analogue gain, colour gains) plus a software white gain for what the camera could not fix.

The profiles live in ONE small TOML file (default `<data_dir>/profiles.toml`, `[calibration]
profiles_file`) that a lab IT person can read, back up and copy to other stations; `smearscope
backup` includes it. Writes are atomic and serialised with an flock, so the daemon's page and the
`smearscope calibrate` command can both change it; readers re-read it when it changed on disk.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from device.bounds import Bounds, BoundsError, text
from device.camera.controls import ControlError, check_controls
from device.errors import SmearscopeError
from device.fsutil import atomic_write_bytes

FILE_NAME = "profiles.toml"
SCHEMA_VERSION = 1
METHODS = ("auto", "micrometer", "typed")
MAX_NAME = 80
# A microscope camera sees between ~0.02 µm/px (100x oil, big sensor, 2x adapter) and ~5 µm/px (4x):
# values outside are typing mistakes (e.g. px/µm instead of µm/px, or nm).
UM_PER_PX_RANGE = (0.005, 20.0)
SPREAD = Bounds(0, 10, "(IQR / median of the per-frame diameters)")
N_FRAMES = Bounds(1, 100_000, "frames", integer=True)
WHITE_GAIN = Bounds(0.2, 5.0, "(a gain)")
MICROMETER_UM = Bounds(0, 100_000, "µm", lo_open=True)
MICROMETER_PX = Bounds(0, 100_000, "px", lo_open=True)
POINT_PX = Bounds(-100_000, 100_000, "px")
HEADER = (
    "# smearscope calibration profiles: one per camera + objective. Copy this file to another\n"
    "# station's data directory (or [calibration] profiles_file) to share them;\n"
    "# `smearscope calibrate list` shows them.\n"
)


class ProfileError(SmearscopeError):
    """A profile is invalid, unknown or the profiles file cannot be read or written."""


def _utc_now() -> str:
    from device.store.store import utc_now  # late: the store package imports sqlite machinery

    return utc_now()


@dataclass
class Profile:
    name: str
    um_per_px: float
    method: str = "typed"
    created_at: str = ""
    created_by: str | None = None
    camera: str = ""  # the source it was measured on (e.g. "picamera2 2028x1520@5")
    notes: str = ""
    spread: float | None = None  # auto: robust relative spread of the per-frame estimates (IQR/median)
    n_frames: int | None = None  # auto: frames the median is over
    micrometer: dict[str, Any] | None = None  # {"length_um", "length_px", "points": [[x, y], [x, y]]}
    white_gains: list[float] | None = None  # software RGB gains applied to every frame, before anything
    controls: dict[str, Any] = field(default_factory=dict)  # camera controls fixed by --white

    def check(self) -> Profile:
        """Every field typed, finite and in range (a profile file is edited by hand and copied between
        stations); ProfileError names the profile and the key."""
        if not isinstance(self.name, str):
            raise ProfileError(f"a profile's name must be a string (camera + objective), not {self.name!r}")
        self.name = " ".join(self.name.split())
        if not self.name or len(self.name) > MAX_NAME:
            raise ProfileError(f"a profile needs a name of 1 to {MAX_NAME} characters (camera + objective)")
        if not isinstance(self.method, str) or self.method not in METHODS:
            raise ProfileError(f"profile {self.name!r}: method must be one of {', '.join(METHODS)}")
        lo, hi = UM_PER_PX_RANGE
        u = self.um_per_px
        if isinstance(u, bool) or not isinstance(u, int | float) or not math.isfinite(u) or not lo <= u <= hi:
            raise ProfileError(
                f"profile {self.name!r}: um_per_px must be a number between {lo} and {hi} µm per pixel "
                f"(got {u!r}); did you type pixels per µm?"
            )
        self.um_per_px = float(u)
        try:
            self._check_fields()
        except (BoundsError, ControlError) as exc:
            raise ProfileError(f"profile {self.name!r}: {exc}") from None
        return self

    def _check_fields(self) -> None:
        self.created_at = text("created_at", self.created_at, 40) or ""
        self.created_by = text("created_by", self.created_by, 200, optional=True)
        self.camera = text("camera", self.camera, 200) or ""
        self.notes = text("notes", self.notes, 10_000) or ""
        if self.spread is not None:
            self.spread = SPREAD.check("spread", self.spread)
        if self.n_frames is not None:
            self.n_frames = N_FRAMES.check("n_frames", self.n_frames)
        if self.white_gains is not None:
            g = self.white_gains
            if not isinstance(g, list | tuple) or len(g) != 3:
                raise BoundsError(f"white_gains: must be 3 numbers [R, G, B], not {g!r}")
            self.white_gains = [WHITE_GAIN.check(f"white_gains[{i}]", x) for i, x in enumerate(g)]
        if self.micrometer is not None:
            self.micrometer = _check_micrometer(self.micrometer)
        self.controls = check_controls(self.controls, "controls")

    def to_dict(self) -> dict[str, Any]:
        """TOML/JSON form; None values are left out (TOML has no null)."""
        out = {
            "name": self.name,
            "um_per_px": self.um_per_px,
            "method": self.method,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "camera": self.camera,
            "notes": self.notes,
            "spread": self.spread,
            "n_frames": self.n_frames,
            "micrometer": self.micrometer,
            "white_gains": self.white_gains,
            "controls": self.controls or None,
        }
        return {k: v for k, v in out.items() if v is not None and v != ""}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Profile:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        extra = set(d) - set(known)
        if extra:
            raise ProfileError(f"profile {d.get('name')!r}: unknown keys {sorted(extra)}")
        if "um_per_px" not in known:
            raise ProfileError(f"profile {d.get('name')!r}: um_per_px is missing")
        known["controls"] = known.get("controls") or {}
        return cls(**known).check()

    def summary(self) -> str:
        how = self.method
        if self.method == "auto" and self.spread is not None:
            how += f", {self.n_frames} frames, spread {100 * self.spread:.1f}%"
        colour = ", colour fixed" if self.controls or self.white_gains else ""
        return f"{self.um_per_px:.4f} µm/px ({how}{colour})"


def _check_micrometer(m: Any) -> dict[str, Any]:
    """{"length_um", "length_px", "points": [[x, y], [x, y]]}: what a micrometer calibration keeps."""
    if not isinstance(m, dict) or set(m) - {"length_um", "length_px", "points"}:
        raise BoundsError(f"micrometer: must be a table of length_um, length_px and points, not {m!r}")
    out: dict[str, Any] = {}
    if "length_um" in m:
        out["length_um"] = MICROMETER_UM.check("micrometer.length_um", m["length_um"])
    if "length_px" in m:
        out["length_px"] = MICROMETER_PX.check("micrometer.length_px", m["length_px"])
    if "points" in m:
        pts = m["points"]
        if (
            not isinstance(pts, list)
            or len(pts) != 2
            or not all(isinstance(p, list) and len(p) == 2 for p in pts)
        ):
            raise BoundsError(f"micrometer.points: must be two [x, y] points, not {pts!r}")
        out["points"] = [[POINT_PX.check("micrometer.points", v) for v in p] for p in pts]
    return out


def profiles_path(config) -> Path:
    """`[calibration] profiles_file`, else `<data_dir>/profiles.toml`."""
    cal = getattr(config, "calibration", None)
    custom = getattr(cal, "profiles_file", "") if cal is not None else ""
    return Path(custom) if custom else Path(config.device.data_dir) / FILE_NAME


class ProfileStore:
    """The profiles file. Thread-safe; safe against another process (flock on `<file>.lock`)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._active: str | None = None
        self._profiles: dict[str, Profile] = {}
        self.error: str | None = None  # why the file on disk cannot be used (None: it can)
        self.changes = 0  # bumped on every change seen (the camera wrapper re-applies controls)

    @classmethod
    def from_config(cls, config) -> ProfileStore:
        return cls(profiles_path(config))

    # -- reading -------------------------------------------------------------------------------

    def _file_stamp(self) -> tuple[int, int, int] | None:
        """Changes when the file does: every write is a rename of a new file (a new inode)."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _parse(self, text: str) -> tuple[str | None, dict[str, Profile]]:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ProfileError(f"{self.path}: not valid TOML ({exc})") from exc
        version = data.get("schema_version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise ProfileError(f"{self.path}: schema_version {version} is not {SCHEMA_VERSION}")
        profiles: dict[str, Profile] = {}
        raws = data.get("profile", [])
        if not isinstance(raws, list) or not all(isinstance(r, dict) for r in raws):
            raise ProfileError(f"{self.path}: `profile` must be a list of [[profile]] tables")
        for i, raw in enumerate(raws):
            try:
                p = Profile.from_dict(raw)
            except ProfileError as exc:
                raise ProfileError(f"{self.path}: [[profile]] #{i + 1}: {exc}") from None
            if p.name in profiles:
                raise ProfileError(f"{self.path}: two profiles are named {p.name!r}")
            profiles[p.name] = p
        active = data.get("active") or None
        if active is not None and active not in profiles:
            raise ProfileError(f"{self.path}: the active profile {active!r} is not in the file")
        return active, profiles

    def _refresh(self) -> None:
        """Re-read the file when it changed on disk. A broken file (edited by hand) raises
        ProfileError until it changes again; the last good profiles stay in memory meanwhile."""
        stamp = self._file_stamp()
        if stamp == self._stamp:
            if self.error:
                raise ProfileError(self.error)
            return
        self._stamp = stamp
        try:
            if stamp is None:
                active, profiles = None, {}
            else:
                try:
                    text = self.path.read_text(encoding="utf-8")
                except OSError as exc:
                    raise ProfileError(f"{self.path}: cannot read it ({exc.strerror or exc})") from exc
                active, profiles = self._parse(text)
        except ProfileError as exc:
            self.error = str(exc)
            self.changes += 1
            raise
        self.error = None
        if (active, profiles) != (self._active, self._profiles):
            self.changes += 1
        self._active, self._profiles = active, profiles

    def list(self) -> list[Profile]:
        with self._lock:
            self._refresh()
            return list(self._profiles.values())

    def get(self, name: str) -> Profile | None:
        with self._lock:
            self._refresh()
            return self._profiles.get(name)

    def active(self) -> Profile | None:
        with self._lock:
            self._refresh()
            return self._profiles.get(self._active) if self._active else None

    def last_active(self) -> Profile | None:
        """The active profile as last read successfully (no file access)."""
        with self._lock:
            return self._profiles.get(self._active) if self._active else None

    def update(self, name: str, **changes: Any) -> Profile:
        """Change fields of an existing profile (e.g. its colour controls after --white)."""
        with self._edit() as st:
            old = st["profiles"].get(name)
            if old is None:
                raise ProfileError(f"no profile {name!r}; known: {', '.join(st['profiles']) or 'none'}")
            new = Profile.from_dict({**old.to_dict(), **changes})
            st["profiles"][name] = new
            return new

    def active_name(self) -> str | None:
        p = self.active()
        return p.name if p else None

    # -- writing -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _edit(self) -> Iterator[dict[str, Any]]:
        """Lock (thread + file), re-read, let the caller change {"active", "profiles"}, write back."""
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path.with_name(self.path.name + ".lock"), "a") as lockf:
                fcntl.flock(lockf, fcntl.LOCK_EX)
                self._stamp = None  # force a re-read under the lock
                self._refresh()
                state = {"active": self._active, "profiles": dict(self._profiles)}
                yield state
                self._write(state["active"], state["profiles"])
                self._refresh()

    def _write(self, active: str | None, profiles: dict[str, Profile]) -> None:
        doc: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
        if active:
            doc["active"] = active
        doc["profile"] = [p.to_dict() for p in profiles.values()]
        data = (HEADER + tomli_w.dumps(doc)).encode("utf-8")
        try:
            atomic_write_bytes(self.path, data)
        except OSError as exc:
            raise ProfileError(f"{self.path}: cannot write it ({exc.strerror or exc})") from exc

    def save(self, profile: Profile, *, activate: bool = False, replace: bool = False) -> Profile:
        """Add (or with `replace`, overwrite) a profile; `activate` makes it the active one. The first
        profile of a station becomes active by itself."""
        profile.check()
        profile.created_at = profile.created_at or _utc_now()
        with self._edit() as st:
            if profile.name in st["profiles"] and not replace:
                raise ProfileError(
                    f"a profile named {profile.name!r} exists: choose another name or replace it "
                    "(calibrate --replace; on the page: tick “replace”)"
                )
            st["profiles"][profile.name] = profile
            if activate or not st["active"]:
                st["active"] = profile.name
        return profile

    def activate(self, name: str) -> Profile:
        with self._edit() as st:
            if name not in st["profiles"]:
                raise ProfileError(f"no profile {name!r}; known: {', '.join(st['profiles']) or 'none'}")
            st["active"] = name
            return st["profiles"][name]

    def remove(self, name: str) -> None:
        """Delete a profile; removing the active one leaves the station without one (scale unknown)."""
        with self._edit() as st:
            if name not in st["profiles"]:
                raise ProfileError(f"no profile {name!r}")
            del st["profiles"][name]
            if st["active"] == name:
                st["active"] = None

    def import_from(self, other: Path, *, replace: bool = False) -> list[str]:
        """Add the profiles of another station's file (checked first; nothing changes on an error).
        Names already here need `replace`; the station's active profile stays, or, without one, the
        other file's active one is taken. Returns the names imported."""
        src = ProfileStore(other)
        if not src.path.is_file():
            raise ProfileError(f"{other} does not exist")
        incoming, their_active = src.list(), src.active_name()
        with self._edit() as st:
            clash = [p.name for p in incoming if p.name in st["profiles"]]
            if clash and not replace:
                raise ProfileError(f"already here: {', '.join(clash)} (import with --replace to overwrite)")
            for p in incoming:
                st["profiles"][p.name] = p
            if not st["active"] and their_active:
                st["active"] = their_active
        return [p.name for p in incoming]

    def export_text(self) -> str:
        """The file as it is on disk (for downloads); an empty file when there is none yet."""
        try:
            return self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return HEADER + tomli_w.dumps({"schema_version": SCHEMA_VERSION, "profile": []})
