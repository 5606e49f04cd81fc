"""The technician's page: Flask application factory.

`create_app(config, services)` is called once by `smearscope run` (see DEVELOPERS.md Contract 4);
the blueprints in this package read `services` through `current_app.extensions["smearscope"]`.
"""

from __future__ import annotations

import contextlib
import secrets
import sqlite3
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import Flask, g, jsonify, render_template, request
from flask_babel import gettext, lazy_gettext
from werkzeug.exceptions import HTTPException

from common.wording import DISCLAIMER
from device import __version__
from device.fsutil import atomic_write_bytes
from device.store.store import DiskFullError, is_disk_full
from device.web import advice, auth, i18n, proxy, security
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
    proxy.install(app, config.web.secure_cookies)  # HTTPS behind nginx: forwarded headers, Secure cookies
    app.extensions["smearscope"] = WebContext(
        config,
        services,
        streams=StreamBudget(config.web.max_streams, config.web.max_streams_per_user),
        decode_slots=threading.BoundedSemaphore(config.web.decode_slots),
    )

    from device.web import account, admin, api, calibration, history, live, report, samples, system, upload

    for module in (account, live, samples, report, history, upload, system, admin, calibration, api):
        app.register_blueprint(module.bp)

    app.before_request(security.load_user)
    app.before_request(security.enforce)

    app.add_template_filter(confidence_text, "confidence")
    i18n.init_app(app)
    advice.init_app(app)

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

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        if security.wants_json():
            return jsonify({"error": exc.description or exc.name}), exc.code
        return render_template("error.html", code=exc.code, name=exc.name, message=exc.description), exc.code

    @app.errorhandler(DiskFullError)
    @app.errorhandler(sqlite3.OperationalError)
    def _storage_full(exc: Exception):
        if not is_disk_full(exc):
            raise exc
        with contextlib.suppress(Exception):
            services.store.disk_full = True
        msg = gettext("storage full: nothing was stored; free disk space (see Status) and try again")
        if security.wants_json() or request.path.startswith("/api/"):
            return jsonify({"error": msg}), 507
        return render_template("error.html", code=507, name=gettext("Storage full"), message=msg), 507

    @app.errorhandler(413)
    def _too_large(exc):
        got = request.content_length
        limits = {"total": f"{request_limit(config) / 1e6:.0f}", "each": config.web.max_upload_mb}
        msg = (
            gettext(
                "upload too large: this request is %(got)s MB; one request may carry at most %(total)s MB "
                "in all, each file at most %(each)s MB",
                got=f"{got / 1e6:.1f}",
                **limits,
            )
            if got
            else gettext(
                "upload too large: one request may carry at most %(total)s MB in all, each file at most "
                "%(each)s MB",
                **limits,
            )
        )
        if security.wants_json() or request.path.startswith("/api/"):
            return jsonify({"error": msg}), 413
        return render_template("error.html", code=413, name=gettext("Too large"), message=msg), 413

    return app
