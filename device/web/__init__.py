"""The technician's page: Flask application factory.

`create_app(config, services)` is called once by `smearscope run` (see DEVELOPERS.md Contract 4);
the blueprints in this package read `services` through `current_app.extensions["smearscope"]`.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import Flask, g
from flask_babel import lazy_gettext

from common.wording import DISCLAIMER
from device import __version__
from device.fsutil import atomic_write_bytes
from device.web import advice, auth, errors, i18n, proxy, security
from device.web.streams import StreamBudget

SECRET_FILE = "web_secret_key"


@dataclass
class WebContext:
    """What the views need, kept on the app as `app.extensions["smearscope"]`."""

    config: Any
    services: Any
    limiter: auth.LoginLimiter = field(default_factory=auth.LoginLimiter)
    streams: StreamBudget = field(default_factory=lambda: StreamBudget(8, 4))
    decode_slots: threading.Semaphore = field(default_factory=lambda: threading.BoundedSemaphore(2))

    @property
    def store(self):
        return self.services.store

    def conn(self):
        return self.services.store.conn

    @property
    def data_dir(self) -> Path:
        return Path(self.config.device.data_dir)


def _secret_key(config) -> str:
    """[web] secret_key / SMEARSCOPE_SECRET_KEY, else a random key kept (0600) in the data dir so
    sessions survive a restart."""
    if config.web.secret_key:
        return config.web.secret_key
    path = Path(config.device.data_dir) / SECRET_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        key = secrets.token_urlsafe(48)
        atomic_write_bytes(path, key.encode(), mode=0o600)
        return key


def request_limit(config) -> int:
    """Bytes one request may carry: ten files at the per-file limit (MB = 10^6 bytes), plus the form."""
    return config.web.max_upload_mb * 10**6 * 10 + 10**6


def confidence_text(x: float | None) -> str:
    """A confidence for people: never "100.0%" (a rounded 0.9996 is not certainty)."""
    x = float(x or 0.0)
    return "≥ 99.9%" if x >= 0.999 else f"{100 * x:.1f}%"


def create_app(config, services) -> Flask:
    app = Flask(__name__)
    _configure(app, config)
    proxy.install(app, config.web.secure_cookies)  # HTTPS behind nginx: forwarded headers, Secure cookies
    app.extensions["smearscope"] = WebContext(
        config,
        services,
        streams=StreamBudget(config.web.max_streams, config.web.max_streams_per_user),
        decode_slots=threading.BoundedSemaphore(config.web.decode_slots),
    )
    _register_blueprints(app)
    app.before_request(security.load_user)
    app.before_request(security.enforce)
    app.add_template_filter(confidence_text, "confidence")
    i18n.init_app(app)
    advice.init_app(app)
    _add_page_hooks(app, config)
    errors.init_app(app, request_limit(config), config.web.max_upload_mb)
    return app


def _configure(app: Flask, config) -> None:
    """Session cookie, request size and caching settings."""
    app.config.update(
        SECRET_KEY=_secret_key(config),
        SESSION_COOKIE_NAME="smearscope_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=timedelta(minutes=config.web.session_minutes),
        # Several files may go in one request; each file is checked against max_upload_mb on its own.
        MAX_CONTENT_LENGTH=request_limit(config),
        TEMPLATES_AUTO_RELOAD=False,
        SEND_FILE_MAX_AGE_DEFAULT=timedelta(hours=1),
    )
    app.json.sort_keys = False  # keep the record JSON in Contract 3's order


def _register_blueprints(app: Flask) -> None:
    from device.web import account, admin, api, calibration, history, live, report, samples, system, upload

    for module in (account, live, samples, report, history, upload, system, admin, calibration, api):
        app.register_blueprint(module.bp)


def _add_page_hooks(app: Flask, config) -> None:
    """What every template sees, and the security headers of every response."""

    @app.context_processor
    def _globals() -> dict[str, Any]:
        return {
            "disclaimer": lazy_gettext(DISCLAIMER),
            "current_user": g.get("user"),
            "csrf_token": security.csrf_token,
            "version": __version__,
            "open_live_view": config.web.open_live_view,
        }

    @app.after_request
    def _headers(resp):
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("X-Frame-Options", "DENY")
        resp.headers.setdefault("Referrer-Policy", "same-origin")
        resp.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
            "connect-src 'self'; frame-ancestors 'none'; form-action 'self'",
        )
        if g.get("user") is not None and resp.mimetype in ("text/html", "application/json"):
            resp.headers.setdefault("Cache-Control", "no-store")
        return resp
