"""The daemon's configuration: one TOML file read once into typed dataclasses.

Layers, later wins: embedded defaults (`default_config.toml`) → `/etc/smearscope/config.toml` (when
present) or `--config FILE` → CLI `--host/--port/--data-dir` → secrets from the environment
(`SMEARSCOPE_SECRET_KEY`, `SMEARSCOPE_SYNC_TOKEN`). Every problem is reported with the key it is about,
e.g. ``[camera] fps: must be > 0`` or ``unknown key [web] prot``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from device.errors import ConfigError

SYSTEM_CONFIG = Path("/etc/smearscope/config.toml")
ENV_SECRET_KEY = "SMEARSCOPE_SECRET_KEY"
ENV_SYNC_TOKEN = "SMEARSCOPE_SYNC_TOKEN"
CAMERA_SOURCES = ("replay", "opencv", "picamera2", "jetson")


@dataclass
class DeviceConfig:
    id: str = ""
    data_dir: str = "var"

    def check(self) -> None:
        _need(bool(self.data_dir), "device", "data_dir", "must not be empty")


@dataclass
class CameraConfig:
    source: str = "replay"
    path: str = ""
    device: str = "0"
    width: int = 1280
    height: int = 960
    fps: float = 5.0
    loop: bool = True
    reopen_initial_s: float = 0.5
    reopen_max_s: float = 30.0
    # replay only: a virtual microscope (device/optics/virtual.py) renders width x height frames
    virtual: bool = False
    um_per_px: float = 0.0  # µm per pixel of the rendered frames; 0 = the source images' own
    source_um_per_px: float = 0.0  # µm per pixel of the images in `path`; 0 = the shipped samples'
    tint_r: float = 1.0
    tint_b: float = 1.0
    vignetting: float = 0.0
    noise: float = 0.0
    blur: float = 0.0
    pan: bool = True
    dwell_s: float = 4.0
    move_s: float = 1.0
    seed: int = 0

    def check(self) -> None:
        _need(
            self.source in CAMERA_SOURCES, "camera", "source", f"must be one of {', '.join(CAMERA_SOURCES)}"
        )
        _need(self.um_per_px >= 0, "camera", "um_per_px", "must be >= 0 (0: the source images' scale)")
        _need(self.source_um_per_px >= 0, "camera", "source_um_per_px", "must be >= 0")
        _need(0 < self.tint_r <= 4 and 0 < self.tint_b <= 4, "camera", "tint_r", "tint gains must be in 0..4")
        _need(0 <= self.vignetting < 0.95, "camera", "vignetting", "must be in 0..0.95")
        _need(self.noise >= 0 and self.blur >= 0, "camera", "noise", "noise and blur must be >= 0")
        _need(self.dwell_s > 0 and self.move_s >= 0, "camera", "dwell_s", "dwell_s > 0 and move_s >= 0")
        _need(self.fps > 0, "camera", "fps", "must be > 0")
        _need(self.width > 0, "camera", "width", "must be > 0")
        _need(self.height > 0, "camera", "height", "must be > 0")
        _need(self.reopen_initial_s > 0, "camera", "reopen_initial_s", "must be > 0")
        _need(
            self.reopen_max_s >= self.reopen_initial_s,
            "camera",
            "reopen_max_s",
            "must be >= reopen_initial_s",
        )


@dataclass
class OpticsConfig:
    rbc_diameter_um: float = 7.5  # the red-cell ruler of device/optics/scale.py
    clipped_white_choice: bool = True  # device/optics/analyse.py: a clipped background's alternatives

    def check(self) -> None:
        _need(4.0 <= self.rbc_diameter_um <= 12.0, "optics", "rbc_diameter_um", "must be in 4..12 µm")


@dataclass
class QualityConfig:
    enabled: bool = True
    analysis_width: int = 320
    min_focus: float = 20.0
    max_clipped_high: float = 0.6
    max_clipped_low: float = 0.25
    min_stain: float = 0.025
    min_contrast: float = 10.0
    scale_check: bool = True
    scale_tolerance: float = 0.2

    def check(self) -> None:
        _need(0.01 <= self.scale_tolerance <= 1.0, "quality", "scale_tolerance", "must be between 0.01 and 1")
        _need(self.analysis_width >= 32, "quality", "analysis_width", "must be >= 32")
        _need(self.min_focus >= 0, "quality", "min_focus", "must be >= 0")
        for key in ("max_clipped_high", "max_clipped_low", "min_stain"):
            _need(0.0 <= getattr(self, key) <= 1.0, "quality", key, "must be between 0 and 1")
        _need(self.min_contrast >= 0, "quality", "min_contrast", "must be >= 0")


@dataclass
class ClassifierConfig:
    models: list[str] = field(default_factory=list)
    threads: int = 2
    abstain_threshold: float = 0.0
    abstain_on_disagreement: bool = True
    smoothing_alpha: float = 0.5
    field_change: float = 18.0
    heatmap: bool = True
    settle_frames: int = -1
    settle_threshold: float = 3.0

    def check(self) -> None:
        _need(self.settle_frames >= -1, "classifier", "settle_frames", "must be >= 0 (or -1: auto)")
        _need(self.settle_threshold > 0, "classifier", "settle_threshold", "must be > 0")
        _need(1 <= self.threads <= 64, "classifier", "threads", "must be between 1 and 64")
        _need(0.0 <= self.abstain_threshold < 1.0, "classifier", "abstain_threshold", "must be in [0, 1)")
        _need(0.0 < self.smoothing_alpha <= 1.0, "classifier", "smoothing_alpha", "must be in (0, 1]")
        _need(self.field_change > 0, "classifier", "field_change", "must be > 0")


@dataclass
class TilingConfig:
    overlap: float = 0.125
    max_tiles: int = 24
    min_cover: float = 0.5
    min_nucleus_um2: float = 12.0

    def check(self) -> None:
        _need(0.0 <= self.overlap <= 0.75, "tiling", "overlap", "must be between 0 and 0.75")
        _need(1 <= self.max_tiles <= 256, "tiling", "max_tiles", "must be between 1 and 256")
        _need(0.1 <= self.min_cover <= 1.0, "tiling", "min_cover", "must be between 0.1 and 1")
        _need(self.min_nucleus_um2 > 0, "tiling", "min_nucleus_um2", "must be > 0")


@dataclass
class StoreConfig:
    every_s: float = 10.0
    on_label_change: bool = True
    jpeg_quality: int = 90
    reserve_mb: int = 200
    budget_mb: int = 0
    queue_size: int = 16

    def check(self) -> None:
        _need(self.every_s >= 0, "store", "every_s", "must be >= 0")
        _need(10 <= self.jpeg_quality <= 100, "store", "jpeg_quality", "must be between 10 and 100")
        _need(self.reserve_mb >= 0, "store", "reserve_mb", "must be >= 0")
        _need(self.budget_mb >= 0, "store", "budget_mb", "must be >= 0 (0 means no budget)")
        _need(self.queue_size >= 1, "store", "queue_size", "must be >= 1")


@dataclass
class WebConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    secret_key: str = ""
    open_live_view: bool = False
    mjpeg_fps: float = 5.0
    session_minutes: int = 480
    max_upload_mb: int = 20
    max_streams: int = 8
    max_streams_per_user: int = 4
    stream_write_timeout_s: float = 10.0
    stream_buffer_kb: int = 256
    max_decode_megapixels: float = 16.0
    decode_slots: int = 2
    secure_cookies: str = "auto"

    def check(self) -> None:
        _need(bool(self.host), "web", "host", "must not be empty")
        _need(
            self.secure_cookies in ("auto", "always", "never"),
            "web",
            "secure_cookies",
            'must be "auto", "always" or "never"',
        )
        _need(0 <= self.port <= 65535, "web", "port", "must be between 0 and 65535")
        _need(self.mjpeg_fps > 0, "web", "mjpeg_fps", "must be > 0")
        _need(self.session_minutes > 0, "web", "session_minutes", "must be > 0")
        _need(self.max_upload_mb > 0, "web", "max_upload_mb", "must be > 0")
        # A stream holds a server thread: keep at least 8 of the 24 for pages, logins and /healthz.
        _need(1 <= self.max_streams <= 16, "web", "max_streams", "must be between 1 and 16")
        _need(
            1 <= self.max_streams_per_user <= self.max_streams,
            "web",
            "max_streams_per_user",
            "must be between 1 and max_streams",
        )
        _need(self.stream_write_timeout_s > 0, "web", "stream_write_timeout_s", "must be > 0")
        _need(16 <= self.stream_buffer_kb <= 16384, "web", "stream_buffer_kb", "must be between 16 and 16384")
        _need(
            1 <= self.max_decode_megapixels <= 50, "web", "max_decode_megapixels", "must be between 1 and 50"
        )
        _need(1 <= self.decode_slots <= 8, "web", "decode_slots", "must be between 1 and 8")


@dataclass
class SyncConfig:
    enabled: bool = False
    hub_url: str = ""
    token: str = ""
    ca_file: str = ""
    interval_s: float = 30.0
    batch_size: int = 100
    max_backoff_s: float = 600.0
    proxy: str = ""
    timeout_s: float = 20.0

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
        _need(self.interval_s > 0, "sync", "interval_s", "must be > 0")
        _need(1 <= self.batch_size <= 10_000, "sync", "batch_size", "must be between 1 and 10000")
        _need(self.max_backoff_s > 0, "sync", "max_backoff_s", "must be > 0")
        _need(self.timeout_s > 0, "sync", "timeout_s", "must be > 0")


UPDATE_POLICIES = ("manual", "auto")


@dataclass
class ModelsConfig:
    trusted_keys: list[str] = field(default_factory=lambda: ["project"])
    allow_unsigned: bool = False
    update_policy: str = "manual"
    poll_s: float = 300.0

    def check(self) -> None:
        _need(
            self.update_policy in UPDATE_POLICIES,
            "models",
            "update_policy",
            f"must be one of {', '.join(UPDATE_POLICIES)}",
        )
        _need(self.poll_s > 0, "models", "poll_s", "must be > 0")
        _need(
            bool(self.trusted_keys) or self.allow_unsigned,
            "models",
            "trusted_keys",
            "must list at least one key (or set allow_unsigned = true)",
        )


@dataclass
class CalibrationConfig:
    profiles_file: str = ""
    frames: int = 20
    min_confident: float = 0.6
    max_spread: float = 0.15
    white_target: float = 230.0

    def check(self) -> None:
        _need(3 <= self.frames <= 500, "calibration", "frames", "must be between 3 and 500")
        _need(0.0 < self.min_confident <= 1.0, "calibration", "min_confident", "must be in (0, 1]")
        _need(0.0 < self.max_spread < 1.0, "calibration", "max_spread", "must be in (0, 1)")
        _need(100.0 <= self.white_target <= 250.0, "calibration", "white_target", "must be in [100, 250]")


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
    source: str = "defaults"  # which file the values came from (shown in status)

    @property
    def data_dir(self) -> Path:
        return Path(self.device.data_dir)

    def check(self) -> None:
        for f in _sections():
            getattr(self, f.name).check()

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
