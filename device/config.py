"""The daemon's configuration: one TOML file read once into typed dataclasses.

Layers, later wins: embedded defaults (`default_config.toml`) → `/etc/smearscope/config.toml` (when
present) or `--config FILE` → CLI `--host/--port/--data-dir` → secrets from the environment
(`SMEARSCOPE_SECRET_KEY`, `SMEARSCOPE_SYNC_TOKEN`). Every problem is reported with the key it is about,
e.g. ``[camera] fps: must be > 0`` or ``unknown key [web] prot``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from device.bounds import Bounds, BoundsError
from device.errors import ConfigError

log = logging.getLogger(__name__)

SYSTEM_CONFIG = Path("/etc/smearscope/config.toml")
ENV_SECRET_KEY = "SMEARSCOPE_SECRET_KEY"
ENV_SYNC_TOKEN = "SMEARSCOPE_SYNC_TOKEN"
CAMERA_SOURCES = ("replay", "opencv", "picamera2", "jetson")
DAY_S = 86_400.0


def _num(default: float, lo: float | None, hi: float | None, unit: str = "", **kw: bool) -> Any:
    """A numeric field with its range: `Config.check` refuses a value outside it (and NaN, inf)."""
    return field(default=default, metadata={"bounds": Bounds(lo, hi, unit, **kw)})


class _Section:
    """A config section: numbers are checked against their fields' `Bounds` (Config.check); `check`
    holds the rules that span fields."""

    def check(self) -> None:
        pass


@dataclass
class DeviceConfig(_Section):
    id: str = ""
    data_dir: str = "var"
    timezone: str = ""  # IANA name for dates people read (reports); empty: the system's zone

    def check(self) -> None:
        _need(bool(self.data_dir), "device", "data_dir", "must not be empty")
        if self.timezone:
            from device.localtime import is_zone

            _need(is_zone(self.timezone), "device", "timezone", "not an IANA time zone (e.g. Europe/Berlin)")


@dataclass
class CameraConfig(_Section):
    source: str = "replay"
    path: str = ""
    device: str = "0"
    width: int = _num(1280, 1, 16384, "px")
    height: int = _num(960, 1, 16384, "px")
    fps: float = _num(5.0, 0, 120, "frames/s", lo_open=True)
    loop: bool = True
    reopen_initial_s: float = _num(0.5, 0, 3600, "s", lo_open=True)
    reopen_max_s: float = _num(30.0, 0, 3600, "s", lo_open=True)
    # replay only: a virtual microscope (device/camera/virtual.py) renders width x height frames
    virtual: bool = False
    um_per_px: float = _num(0.0, 0, 20, "µm/px (0: the source images' scale)")  # of the rendered frames
    source_um_per_px: float = _num(0.0, 0, 20, "µm/px")  # of the images in `path`; 0 = the shipped samples'
    tint_r: float = _num(1.0, 0, 4, "(a gain)", lo_open=True)
    tint_b: float = _num(1.0, 0, 4, "(a gain)", lo_open=True)
    vignetting: float = _num(0.0, 0, 0.95, hi_open=True)
    noise: float = _num(0.0, 0, 100, "(grey levels)")
    blur: float = _num(0.0, 0, 50, "px")
    pan: bool = True
    dwell_s: float = _num(4.0, 0, 3600, "s", lo_open=True)
    move_s: float = _num(1.0, 0, 3600, "s")
    seed: int = _num(0, 0, 2**32 - 1)

    def check(self) -> None:
        _need(
            self.source in CAMERA_SOURCES, "camera", "source", f"must be one of {', '.join(CAMERA_SOURCES)}"
        )
        _need(
            self.reopen_max_s >= self.reopen_initial_s,
            "camera",
            "reopen_max_s",
            "must be >= reopen_initial_s",
        )


@dataclass
class OpticsConfig(_Section):
    rbc_diameter_um: float = _num(7.5, 4, 12, "µm")  # the red-cell ruler of device/optics/scale.py
    clipped_white_choice: bool = True  # device/optics/analyse.py: a clipped background's alternatives


@dataclass
class QualityConfig(_Section):
    enabled: bool = True
    analysis_width: int = _num(320, 32, 4096, "px")
    min_focus: float = _num(20.0, 0, 1e6, "(variance of the Laplacian)")
    max_clipped_high: float = _num(0.6, 0, 1, "(a fraction)")
    max_clipped_low: float = _num(0.25, 0, 1, "(a fraction)")
    min_stain: float = _num(0.025, 0, 1, "(a fraction)")
    min_contrast: float = _num(10.0, 0, 255, "(grey levels)")
    max_noise: float = _num(6.0, 0, 255, "(grey levels)", lo_open=True)
    max_blockiness: float = _num(1.6, 1, 100, "(a ratio)", lo_open=True)
    scale_check: bool = True
    scale_tolerance: float = _num(0.35, 0.01, 1, "(a fraction)")
    scale_mismatch_fields: int = _num(3, 1, 20, "fields in a row")
    scale_ok_fields: int = _num(2, 1, 20, "fields in a row")


@dataclass
class ClassifierConfig(_Section):
    models: list[str] = field(default_factory=list)
    threads: int = _num(2, 1, 64)
    abstain_threshold: float = _num(0.0, 0, 1, "(a probability)", hi_open=True)
    abstain_on_disagreement: bool = True
    heatmap: bool = True
    settle_frames: int = _num(-1, -1, 1000, "frames (-1: auto)")
    settle_threshold: float = _num(3.0, 0, 255, "(grey levels)", lo_open=True)


@dataclass
class TilingConfig(_Section):
    overlap: float = _num(0.125, 0, 0.75, "(a fraction of a tile)")
    max_tiles: int = _num(24, 1, 256)
    min_cover: float = _num(0.5, 0.1, 1, "(a fraction)")
    min_nucleus_um2: float = _num(12.0, 0, 1000, "µm²", lo_open=True)


@dataclass
class StoreConfig(_Section):
    every_s: float = _num(10.0, 0, DAY_S, "s")
    on_label_change: bool = True
    jpeg_quality: int = _num(90, 10, 100)
    reserve_mb: int = _num(200, 0, 10**7, "MB")
    budget_mb: int = _num(0, 0, 10**9, "MB (0: no budget)")
    queue_size: int = _num(16, 1, 4096)


@dataclass
class WebConfig(_Section):
    host: str = "127.0.0.1"
    port: int = _num(8080, 0, 65535)
    secret_key: str = ""
    open_live_view: bool = False
    mjpeg_fps: float = _num(5.0, 0, 30, "frames/s", lo_open=True)
    session_minutes: int = _num(480, 1, 43_200, "minutes")
    max_upload_mb: int = _num(20, 1, 1000, "MB")
    # A stream holds a server thread: keep at least 8 of the 24 for pages, logins and /healthz.
    max_streams: int = _num(8, 1, 16)
    max_streams_per_user: int = _num(4, 1, 16)
    stream_write_timeout_s: float = _num(10.0, 0, 600, "s", lo_open=True)
    stream_buffer_kb: int = _num(256, 16, 16384, "KiB")
    max_decode_megapixels: float = _num(16.0, 1, 50, "megapixels")
    decode_slots: int = _num(2, 1, 8)
    secure_cookies: str = "auto"

    def check(self) -> None:
        _need(bool(self.host), "web", "host", "must not be empty")
        _need(
            self.secure_cookies in ("auto", "always", "never"),
            "web",
            "secure_cookies",
            'must be "auto", "always" or "never"',
        )
        _need(
            self.max_streams_per_user <= self.max_streams,
            "web",
            "max_streams_per_user",
            "must be between 1 and max_streams",
        )


@dataclass
class SyncConfig(_Section):
    enabled: bool = False
    hub_url: str = ""
    token: str = ""
    ca_file: str = ""
    interval_s: float = _num(30.0, 0, DAY_S, "s", lo_open=True)
    batch_size: int = _num(100, 1, 10_000)
    max_backoff_s: float = _num(600.0, 0, DAY_S, "s", lo_open=True)
    proxy: str = ""
    timeout_s: float = _num(20.0, 0, 600, "s", lo_open=True)

    def check(self) -> None:
        if self.enabled:
            _need(bool(self.hub_url), "sync", "hub_url", "must be set when sync is enabled")
        if self.hub_url:
            _need(
                self.hub_url.startswith(("https://", "http://")),
                "sync",
                "hub_url",
                "must start with https:// (or http:// on a trusted network)",
            )


UPDATE_POLICIES = ("manual", "auto")


@dataclass
class ModelsConfig(_Section):
    trusted_keys: list[str] = field(default_factory=lambda: ["project"])
    allow_unsigned: bool = False
    update_policy: str = "manual"
    poll_s: float = _num(300.0, 0, DAY_S, "s", lo_open=True)

    def check(self) -> None:
        _need(
            self.update_policy in UPDATE_POLICIES,
            "models",
            "update_policy",
            f"must be one of {', '.join(UPDATE_POLICIES)}",
        )
        _need(
            bool(self.trusted_keys) or self.allow_unsigned,
            "models",
            "trusted_keys",
            "must list at least one key (or set allow_unsigned = true)",
        )


@dataclass
class CalibrationConfig(_Section):
    profiles_file: str = ""
    frames: int = _num(20, 3, 500)
    min_confident: float = _num(0.6, 0, 1, "(a fraction)", lo_open=True)
    max_spread: float = _num(0.15, 0, 1, "(IQR / median)", lo_open=True, hi_open=True)
    white_target: float = _num(230.0, 100, 250, "(grey level)")


@dataclass
class CellsConfig(_Section):
    """The slide's white-cell count (`device.cells.count.differential`): how many cells to count and
    when the blast share calls a slide suspicious."""

    target: int = _num(100, 1, 10_000, "white cells")
    threshold_pct: float = _num(2.0, 0, 100, "% of white cells", lo_open=True, hi_open=True)
    max_unclassified_pct: float = _num(10.0, 0, 100, "% of white cells")
    second_reading: bool = True
    second_reading_models: list[str] = field(default_factory=list)

    @property
    def threshold(self) -> float:
        """The screening threshold as a fraction (what `differential` takes)."""
        return self.threshold_pct / 100.0

    @property
    def max_unclassified(self) -> float:
        return self.max_unclassified_pct / 100.0


@dataclass
class Config:
    device: DeviceConfig = field(default_factory=DeviceConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    optics: OpticsConfig = field(default_factory=OpticsConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    tiling: TilingConfig = field(default_factory=TilingConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    web: WebConfig = field(default_factory=WebConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    cells: CellsConfig = field(default_factory=CellsConfig)
    source: str = "defaults"  # which file the values came from (shown in status)

    @property
    def data_dir(self) -> Path:
        return Path(self.device.data_dir)

    def check(self) -> None:
        for f in _sections():
            section = getattr(self, f.name)
            _check_bounds(f.name, section)
            section.check()

    def to_dict(self, *, redact: bool = True) -> dict[str, dict[str, Any]]:
        """The effective configuration; secrets are shown as "***" unless redact=False."""
        out = {f.name: dataclasses.asdict(getattr(self, f.name)) for f in _sections()}
        if redact:
            for section, key in (("web", "secret_key"), ("sync", "token")):
                if out[section][key]:
                    out[section][key] = "***"
        return out


def _sections() -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(Config) if f.name != "source"]


def _check_bounds(name: str, section: Any) -> None:
    """Every numeric field against its declared `Bounds` (typed, finite, in range)."""
    for f in dataclasses.fields(section):
        bounds = f.metadata.get("bounds")
        if bounds is not None:
            value = getattr(section, f.name)
            if f.type in ("int", int):
                bounds = dataclasses.replace(bounds, integer=True)
            try:
                setattr(section, f.name, bounds.check(f"[{name}] {f.name}", value))
            except BoundsError as exc:
                raise ConfigError(str(exc)) from None


def _need(ok: bool, section: str, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"[{section}] {key}: {message}")


def default_toml() -> str:
    return resources.files("device").joinpath("default_config.toml").read_text(encoding="utf-8")


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} does not exist") from exc
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot read it ({exc.strerror or exc})") from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: not valid TOML ({exc})") from exc


def _coerce(section: str, key: str, value: Any, typ: Any) -> Any:
    """Check a TOML value against the dataclass field type (ints are accepted for floats)."""
    where = f"[{section}] {key}"
    if typ is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: must be true or false, not {value!r}")
        return value
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: must be an integer, not {value!r}")
        return value
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: must be a number, not {value!r}")
        return float(value)
    if typ is str:
        if isinstance(value, int | float) and not isinstance(value, bool) and key in ("device", "id"):
            return str(value)  # `device = 0` for a camera index is natural to write
        if not isinstance(value, str):
            raise ConfigError(f"{where}: must be a string, not {value!r}")
        return value
    if typing.get_origin(typ) is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: must be a list of strings, not {value!r}")
        return list(value)
    raise ConfigError(f"{where}: unsupported type")  # pragma: no cover - a programming error


#: Keys that no longer do anything: a file that still sets one loads, with a warning naming the key.
RETIRED_KEYS = {
    ("classifier", "smoothing_alpha"): "a field is classified once when it settles: nothing is averaged",
    ("classifier", "field_change"): "a new field is told by [classifier] settle_threshold",
}


def _apply(cfg: Config, data: Mapping[str, Any], origin: str) -> None:
    sections = {f.name: f for f in _sections()}
    for section, values in data.items():
        if section not in sections:
            raise ConfigError(f"{origin}: unknown section [{section}] (known: {', '.join(sections)})")
        if not isinstance(values, Mapping):
            raise ConfigError(f"{origin}: [{section}] must be a table")
        obj = getattr(cfg, section)
        hints = typing.get_type_hints(type(obj))
        names = {f.name for f in dataclasses.fields(obj)}
        for key, value in values.items():
            if (section, key) in RETIRED_KEYS:
                log.warning(
                    "%s: [%s] %s is no longer used and is ignored (%s); remove it",
                    origin, section, key, RETIRED_KEYS[section, key],
                )  # fmt: skip
                continue
            if key not in names:
                raise ConfigError(f"{origin}: unknown key [{section}] {key}")
            setattr(obj, key, _coerce(section, key, value, hints[key]))


def load_config(
    path: str | Path | None = None,
    *,
    host: str | None = None,
    port: int | None = None,
    data_dir: str | Path | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    env: Mapping[str, str] | None = None,
    system_config: Path | None = SYSTEM_CONFIG,
) -> Config:
    """Build the validated Config. `path` replaces the system file; `overrides` ({section: {key: v}})
    is for tests and tools. Relative paths (data_dir, camera path) are from the working directory."""
    env = os.environ if env is None else env
    cfg = Config()
    _apply(cfg, tomllib.loads(default_toml()), "default_config.toml")
    chosen = Path(path) if path else (system_config if system_config and system_config.is_file() else None)
    if chosen is not None:
        _apply(cfg, _read_toml(chosen), str(chosen))
        cfg.source = str(chosen)
    if overrides:
        _apply(cfg, overrides, "overrides")
    if host is not None:
        cfg.web.host = host
    if port is not None:
        cfg.web.port = int(port)
    if data_dir is not None:
        cfg.device.data_dir = str(data_dir)
    if env.get(ENV_SECRET_KEY):
        cfg.web.secret_key = env[ENV_SECRET_KEY]
    if env.get(ENV_SYNC_TOKEN):
        cfg.sync.token = env[ENV_SYNC_TOKEN]
    cfg.check()
    cfg.device.data_dir = str((Path.cwd() / cfg.device.data_dir).resolve())
    if cfg.camera.path:
        cfg.camera.path = str((Path.cwd() / cfg.camera.path).resolve())
    if cfg.calibration.profiles_file:
        cfg.calibration.profiles_file = str((Path.cwd() / cfg.calibration.profiles_file).resolve())
    return cfg


def add_config_args(parser: argparse.ArgumentParser, *, web: bool = True) -> None:
    """The options every daemon-side command shares: --config, --data-dir (and --host/--port)."""
    parser.add_argument("--config", metavar="FILE", help=f"TOML config (default: {SYSTEM_CONFIG} if present)")
    parser.add_argument("--data-dir", metavar="DIR", help="database and images directory")
    if web:
        parser.add_argument("--host", help="web server address (default 127.0.0.1)")
        parser.add_argument("--port", type=int, help="web server port (default 8080)")


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(
        getattr(args, "config", None),
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        data_dir=getattr(args, "data_dir", None),
    )
