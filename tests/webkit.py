"""Test helpers for the web page: a Services stand-in on a real Store and LiveView (no model),
an app factory and a logged-in client. Used by tests/test_web*.py and benchmarks/web_bench.py."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests
from prometheus_client import CollectorRegistry, Counter

from device.camera.profiles import ProfileStore
from device.config import load_config
from device.errors import SmearscopeError
from device.optics.jobs import CalibrationJobs
from device.pipeline.live import LiveFrame, LiveView, encode_jpeg
from device.store.store import Store, utc_now
from device.web import auth, create_app

LABELS = [
    {"id": "Benign", "display": "Benign", "malignant": False},
    {"id": "Early", "display": "Early Pre-B", "malignant": True},
    {"id": "Pre", "display": "Pre-B", "malignant": True},
    {"id": "Pro", "display": "Pro-B", "malignant": True},
]
IDS = [lb["id"] for lb in LABELS]
PASSWORD = "correct-horse-1"


class FakeServices:
    """Contract 4 without a camera or model: classification is a fixed function of the mean colour."""

    def __init__(self, config, store: Store):
        self.config = config
        self.store = store
        self.live = LiveView()
        self.registry = CollectorRegistry()
        self.uploads = Counter("smearscope_test_uploads", "uploads", registry=self.registry)
        store.set_labels({lb["id"]: lb["malignant"] for lb in LABELS})
        self.profiles = ProfileStore.from_config(config)
        self.calibration = CalibrationJobs(self)
        self.camera_source = None
        self.scale_estimator = None  # tests set a fake red-cell estimator
        store.acquisition_defaults = self._acquisition_defaults

    def active_profile(self):
        return self.profiles.active()

    def set_active_profile(self, name, user=None):
        return self.profiles.activate(name)

    def _acquisition_defaults(self) -> dict:
        p = self.profiles.active()
        return {"um_per_px": p.um_per_px if p else None, "profile": p.name if p else None}

    def _predict(self, rgb: np.ndarray) -> dict:
        m = rgb.reshape(-1, 3).mean(axis=0) + 1.0
        raw = np.array([m[0], m[1], m[2], m.mean() / 2], dtype=np.float64)
        p = raw / raw.sum()
        idx = int(np.argmax(p))
        conf = float(p[idx])
        return {
            "probabilities": {k: round(float(v), 4) for k, v in zip(IDS, p, strict=True)},
            "label": IDS[idx],
            "confidence": conf,
            "abstained": conf < 0.4,
            "reason": "confidence below threshold" if conf < 0.4 else None,
            "models": [{"name": "fake", "sha256": "0" * 64}],
            "quality": {"ok": True, "focus": 100.0, "clipped_high": 0.0, "clipped_low": 0.0, "stain": 0.3},
        }

    def classify_upload(self, rgb, *, filename, sample_id, user, um_per_px="profile") -> dict:
        self.uploads.inc()
        self.last_um_per_px = um_per_px
        sha = self.store.put_image(encode_jpeg(rgb))
        return self.store.add_result(
            {**self._predict(rgb), "source": "upload", "sample_id": sample_id, "filename": filename,
             "image_sha256": sha}
        )  # fmt: skip

    def scale_info(self) -> dict:
        return {"profile": None, "profile_um_per_px": None, "models_um_per_px": None, "scale_known": False}

    def capture_field(self, sample_id, user) -> dict:
        got = self.live.frames.latest()
        if got is None:
            raise SmearscopeError("no classified field yet")
        rgb = got[1].rgb
        sha = self.store.put_image(encode_jpeg(rgb))
        return self.store.add_result(
            {**self._predict(rgb), "source": "camera", "sample_id": sample_id, "image_sha256": sha}
        )

    def status(self) -> dict:
        return {"camera": "replay", "fps": 5.0, "models": ["fake"], **self.store.counts(), "last_error": None}

    def ensemble_info(self) -> list[dict]:
        return [{"name": "fake", "labels": LABELS, "hash_ok": True}]

    # test helpers
    def push_frame(self, rgb: np.ndarray, *, label: str | None = None, abstained: bool = False) -> None:
        self.live.publish_frame(LiveFrame(rgb, utc_now(), 0))
        pred = self._predict(rgb)
        if label:
            pred["label"] = label
        pred["abstained"] = abstained
        self.live.publish_result({**pred, "captured_at": utc_now(), "rejected": False}, rgb, None)


def smear(seed: int = 0, size: int = 96) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full((size, size, 3), (200, 170, 210), np.uint8)
    for _ in range(12):
        x, y = rng.integers(0, size, 2)
        cv2.circle(img, (int(x), int(y)), int(rng.integers(4, 12)), (120, 60, 150), -1)
    return img


def encode(rgb: np.ndarray, ext: str = ".png") -> bytes:
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


def make_app(tmp_path: Path, **web):
    config = load_config(
        data_dir=tmp_path / "data", system_config=None, env={}, overrides={"web": web} if web else None
    )
    store = Store(config.device.data_dir, reserve_bytes=0)
    services = FakeServices(config, store)
    app = create_app(config, services)
    app.config["TESTING"] = True
    conn = store.conn
    auth.add_user(conn, "tech", "technician", PASSWORD)
    auth.add_user(conn, "admin", "admin", PASSWORD)
    return app, services


def csrf_of(client) -> str:
    """The CSRF token of the client's session (from any page's meta tag)."""
    html = client.get("/login").get_data(as_text=True)
    return re.search(r'name="csrf-token" content="([^"]+)"', html).group(1)


def login(client, name: str = "tech", password: str = PASSWORD):
    token = csrf_of(client)
    return client.post("/login", data={"username": name, "password": password, "csrf_token": token})


def token_of(client) -> str:
    with client.session_transaction() as s:
        return s["csrf"]


REPO = Path(__file__).resolve().parents[1]
SMEARSCOPE_MAIN = "from device.cli import main; raise SystemExit(main())"


@contextlib.contextmanager
def running_daemon(
    args: list[str], port: int, log_path: Path, *, code: str = SMEARSCOPE_MAIN, start_s: float = 90
) -> Iterator[str]:
    """`smearscope <args>` (or `python -c code <args>`) as a real process until /healthz answers on
    `port`; yields the base URL, then stops it with SIGTERM. A daemon that does not come up fails the
    test with the end of its log."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, *args], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO
        )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + start_s
        while True:
            try:
                if requests.get(base + "/healthz", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                log.flush()
                pytest.fail("smearscope run did not start:\n" + log_path.read_text()[-3000:])
            time.sleep(0.3)
        try:
            yield base
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
