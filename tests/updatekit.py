"""Shared pieces of the model-update tests: a clinic key, signed variants of the tiny bundle, a
station (store + models directory + ModelUpdater) and a WSGI wrapper that cuts a download mid-body."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from device.config import load_config
from device.models import modelstore
from device.models.signing import generate_keypair, sign_bundle
from device.store import Store
from device.sync.updates import ModelUpdater

NAME = "tiny-mobilenetv2-int8"


def clinic_key(tmp_path: Path) -> tuple[Path, Path]:
    priv, pub, _ = generate_keypair(tmp_path / "keys" / "clinic.key")
    return priv, pub


def variant(src: Path, dst: Path, key: Path, **manifest_changes: Any) -> Path:
    """A copy of `src` with manifest changes, signed with `key`."""
    shutil.copytree(src, dst)
    path = dst / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **manifest_changes}, indent=2))
    sign_bundle(dst, key)
    return dst


def broken_model(src: Path, dst: Path, key: Path, name: str) -> Path:
    """Signed by a trusted key, manifest hash matching, but the model cannot load: only installing
    it can tell (a bad update, not a forged one)."""
    from device.models.bundle import sha256_file

    shutil.copytree(src, dst)
    model = dst / "model.tflite"
    model.write_bytes(model.read_bytes()[:5000])
    path = dst / "manifest.json"
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "name": name, "sha256": sha256_file(model)}))
    sign_bundle(dst, key)
    return dst


def quiet(_msg: str) -> None:
    pass


class Station:
    """A device's data dir, models dir (the tiny bundle installed) and its updater."""

    def __init__(
        self,
        root: Path,
        tiny_bundle: Path,
        trusted_pub: Path,
        *,
        policy: str = "auto",
        on_installed: Callable[[], Any] | None = None,
    ):
        self.root = root
        self.models = root / "models"
        self.config = load_config(
            data_dir=root / "data",
            system_config=None,
            env={},
            overrides={"models": {"trusted_keys": [str(trusted_pub)], "update_policy": policy}},
        )
        self.store = Store(self.config.device.data_dir, reserve_bytes=0)
        modelstore.install(tiny_bundle, self.models, log=quiet)  # signed by the test key (trusted by env)
        (self.models / "DEFAULT").write_text(f"{NAME}\n")
        self.updater = ModelUpdater(
            self.config, self.store, models_root=self.models, on_installed=on_installed
        )

    def temperature(self, name: str = NAME) -> float:
        return json.loads((self.models / name / "manifest.json").read_text())["temperature"]

    def events(self) -> list[str]:
        return [e["message"] for e in self.store.recent_events(50)]


class CutDownloads:
    """WSGI wrapper: records the Range header of each file request, and can cut the next file
    response after `cut_after` bytes (the connection drops mid-body, as when a hub goes away)."""

    def __init__(self, app: Any):
        self.app = app
        self.cut_after: int | None = None
        self.ranges: list[str | None] = []

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        path = environ.get("PATH_INFO", "")
        body = self.app(environ, start_response)
        if "/models/files/" not in path:
            return body
        self.ranges.append(environ.get("HTTP_RANGE"))
        if self.cut_after is None:
            return body
        n = self.cut_after

        def cut() -> Any:  # the first response longer than n bytes is cut (smaller files pass)
            sent = 0
            for chunk in body:
                if self.cut_after is not None and sent + len(chunk) > n:
                    self.cut_after = None
                    yield chunk[: n - sent]
                    raise ConnectionAbortedError("hub went away mid-download")
                sent += len(chunk)
                yield chunk

        return cut()


def publish(hub: Any, dirs: list[Path], pub: Path, **kw: Any) -> dict[str, Any]:
    from hub.fleet import updates as fleet

    with hub.sessions() as s:
        fleet.add_key(s, pub.read_text())
        return fleet.publish(s, dirs, **kw)
