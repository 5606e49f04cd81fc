"""Flask application factory for the hub. Stateless: everything lives in the database, so several
instances (gunicorn workers, machines behind a load balancer) can share one PostgreSQL."""

from __future__ import annotations

import logging
import secrets
import time
import uuid
from dataclasses import dataclass

from flask import Flask, g, jsonify, request
from flask.sessions import SecureCookieSessionInterface
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from common.wording import DISCLAIMER
from hub import db
from hub.limits import init_limits
from hub.metrics import init_metrics
from hub.models import Setting

log = logging.getLogger("smearscope.hub")


@dataclass
class HubSettings:
    max_body_mb: float = 16.0  # per request, compressed and decompressed
    max_batch: int = 1000  # records per POST
    skew_limit_s: float = 300.0  # |device clock - hub clock| above this flags the records
    rate_limit: str = "6000/minute"  # per token (or address without one); "" = off
    auth_fail_limit: str = "30/minute"  # 401 answers per client address; "" = off
    proxy_hops: int = 0  # reverse proxies in front whose X-Forwarded-For is trusted
    body_timeout_s: float = 30.0  # gunicorn: a request body must arrive within this (hub/slowclient.py)


BYTES_PER_MB = 1024 * 1024

# Every answer: no MIME sniffing (images are served as image/jpeg whatever a device uploaded), no
# framing, and pages may load only the hub's own CSS and images (no inline script can run).
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
}


def create_app(
    url: str | None = None,
    *,
    engine: Engine | None = None,
    settings: HubSettings | None = None,
    migrate: bool = True,
) -> Flask:
    """The hub app on database `url` (or an existing engine). `migrate` upgrades the schema first;
    `smearscope-hub serve` does that once before starting workers and passes migrate=False."""
    if engine is None:
        if url is None:
            raise ValueError("create_app needs a database url or an engine")
        engine = db.make_engine(url)
    if migrate:
        db.upgrade(engine)
    settings = settings or HubSettings()
    app = Flask(__name__, static_folder=None)  # the dashboard blueprint serves /static
    _configure(app, engine, settings)
    _register_blueprints(app)
    _add_request_hooks(app)
    _add_error_handlers(app)

    @app.get("/healthz")
    def healthz():  # noqa: ANN202
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return jsonify({"ok": True})

    return app


def _configure(app: Flask, engine: Engine, settings: HubSettings) -> None:
    """Request size, session cookies and key, the database, proxy headers, rate limits and metrics."""
    app.config["MAX_CONTENT_LENGTH"] = int(settings.max_body_mb * BYTES_PER_MB)
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.session_interface = _HttpsAwareSessions()
    app.extensions["hub"] = {"engine": engine, "sessions": db.session_factory(engine), "settings": settings}
    app.secret_key = _shared_secret(app)
    app.jinja_env.globals["DISCLAIMER"] = DISCLAIMER
    if settings.proxy_hops > 0:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.proxy_hops, x_proto=settings.proxy_hops)
    app.extensions["hub"]["limiter"] = init_limits(app, settings.rate_limit, settings.auth_fail_limit)
    init_metrics(app, engine)


def _register_blueprints(app: Flask) -> None:
    from hub.api import api
    from hub.cells.pages import cells_dashboard
    from hub.dashboard import dashboard
    from hub.export.routes import dataset_export
    from hub.fleet.api import fleet_api
    from hub.fleet.dashboard import fleet_dashboard

    app.register_blueprint(api)
    app.register_blueprint(fleet_api)
    app.register_blueprint(dashboard)
    app.register_blueprint(cells_dashboard)
    app.register_blueprint(fleet_dashboard)
    app.register_blueprint(dataset_export)


def _add_request_hooks(app: Flask) -> None:
    """Per request: its timing and security headers, and its database session closed at the end."""

    @app.before_request
    def _start() -> None:
        g.t0 = time.perf_counter()

    @app.after_request
    def _timing(resp):  # noqa: ANN001, ANN202
        # Server-Timing lets a client (and the benchmark) see the hub's own time per request.
        t0 = g.get("t0")
        if t0 is not None:
            resp.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - t0) * 1000:.2f}"
        for k, v in SECURITY_HEADERS.items():
            resp.headers.setdefault(k, v)
        return resp

    @app.teardown_appcontext
    def _close(_exc: BaseException | None) -> None:
        s = g.pop("db", None)
        if s is not None:
            s.close()


def _add_error_handlers(app: Flask) -> None:
    """Errors as JSON under /api/, as pages elsewhere; never internals in a response."""

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):  # noqa: ANN202
        if not request.path.startswith("/api/"):
            resp = exc.get_response()
        else:
            resp = jsonify({"error": exc.name, "reason": exc.description})
            resp.status_code = exc.code or 500
            if exc.code == 401:
                resp.headers["WWW-Authenticate"] = 'Bearer realm="smearscope-hub"'
        if exc.code == 408:  # the rest of the body may still come: never read it as a request
            resp.headers["Connection"] = "close"
        return resp

    @app.errorhandler(Exception)
    def _crash(exc: Exception):  # noqa: ANN202
        # Never show internals (SQL, paths, stack) to a client: log them under a reference instead.
        if isinstance(exc, HTTPException):
            return _http_error(exc)
        ref = uuid.uuid4().hex[:12]
        log.exception("internal error %s on %s %s", ref, request.method, request.path)
        reason = f"internal error (reference {ref} in the hub's log)"
        if request.path.startswith("/api/"):
            resp = jsonify({"error": "Internal Server Error", "reason": reason})
        else:
            resp = app.response_class(f"Internal Server Error: {reason}\n", mimetype="text/plain")
        resp.status_code = 500
        return resp


class _HttpsAwareSessions(SecureCookieSessionInterface):
    """The session cookie is `Secure` whenever the request came over HTTPS (behind the TLS proxy with
    --proxy-hops, X-Forwarded-Proto says so), so it is never sent over plain HTTP; a LAN hub reached by
    plain HTTP still works."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(request.is_secure)


def _shared_secret(app: Flask) -> str:
    """The session-signing key, made once and kept in the database so every instance shares it."""
    sessions = app.extensions["hub"]["sessions"]
    with sessions() as s:
        row = s.get(Setting, "secret_key")
        if row is not None:
            return row.value
        s.add(Setting(key="secret_key", value=secrets.token_hex(32)))
        try:
            s.commit()
        except IntegrityError:  # another instance made it first
            s.rollback()
        return s.scalar(select(Setting.value).where(Setting.key == "secret_key"))
