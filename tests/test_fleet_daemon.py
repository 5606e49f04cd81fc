"""The running daemon and model updates: the sync worker polls the hub, installs a published set and
the classifier swaps it in without stopping; with the hub unreachable it keeps classifying."""

from __future__ import annotations

import time
from pathlib import Path

from hubkit import Hub, Server
from updatekit import NAME, clinic_key, publish, quiet, variant

from device.config import load_config
from device.models import modelstore
from device.services import Services


def wait_for(cond, timeout: float = 60.0) -> bool:
    """Poll `cond` until true or `timeout` (a bound against hanging, not a speed assertion)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def _station(
    tmp_path: Path, tiny_bundle: Path, frames: Path, hub_url: str, token: str, pub: Path, monkeypatch
):
    models = tmp_path / "models"
    modelstore.install(tiny_bundle, models, log=quiet)
    (models / "DEFAULT").write_text(f"{NAME}\n")
    monkeypatch.setenv("SMEARSCOPE_MODELS_DIR", str(models))
    config = load_config(
        data_dir=tmp_path / "data",
        system_config=None,
        env={},
        overrides={
            "classifier": {"threads": 1},
            "camera": {"path": str(frames), "fps": 20.0},
            "store": {"every_s": 0.5, "reserve_mb": 0},
            "sync": {"enabled": True, "hub_url": hub_url, "token": token, "interval_s": 0.3, "timeout_s": 3},
            "models": {"trusted_keys": [str(pub)], "update_policy": "auto", "poll_s": 0.3},
        },
    )
    return Services(config)


def _classified(s: Services) -> int:
    return int(s.status()["frames_classified"])


def test_published_set_is_swapped_in_while_classifying(tmp_path, tiny_bundle, sample_images, monkeypatch):
    hub = Hub(f"sqlite:///{tmp_path / 'hub.db'}")
    server = Server(hub.app)
    key = clinic_key(tmp_path)
    s = _station(
        tmp_path, tiny_bundle, sample_images[0].parent, server.url, hub.device_token, key[1], monkeypatch
    )
    s.start()
    try:
        assert wait_for(lambda: _classified(s) > 3)
        assert s.ensemble.models[0].manifest.temperature == 1.0
        publish(hub, [variant(tiny_bundle, tmp_path / "v2", key[0], temperature=1.5)], key[1])
        assert wait_for(lambda: s.pipeline.ensemble.models[0].manifest.temperature == 1.5)
        n = _classified(s)
        assert wait_for(lambda: _classified(s) > n + 3)  # the new ensemble classifies
        status = s.status()
        assert status["model_update"]["last_result"]["state"] == "installed"
        assert status["model_signatures"]["ok"] is True
        assert all(w["alive"] and w["restarts"] == 0 and not w["last_error"] for w in status["workers"])
        assert any("models reloaded" in e["message"] for e in s.store.recent_events(50))
    finally:
        s.stop()
        server.close()


def test_no_network_keeps_classifying(tmp_path, tiny_bundle, sample_images, monkeypatch):
    from hub.pgcluster import free_port

    key = clinic_key(tmp_path)
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    s = _station(tmp_path, tiny_bundle, sample_images[0].parent, dead, "token", key[1], monkeypatch)
    s.start()
    try:
        assert wait_for(lambda: _classified(s) > 3)
        assert wait_for(lambda: (s.status()["model_update"] or {}).get("last_error") is not None)
        n = _classified(s)
        assert wait_for(lambda: _classified(s) > n + 5)
        assert s.status()["model_update"]["last_result"] is None
    finally:
        s.stop()
