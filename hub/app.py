"""Flask application factory for the hub. Stateless: everything lives in the database, so several
instances (gunicorn workers, machines behind a load balancer) can share one PostgreSQL."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from flask import Flask, g, jsonify, request
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import HTTPException

from hub import db
from hub.models import Setting

DISCLAIMER = "A screening aid for trained staff, not a diagnosis."


@dataclass
class HubSettings:
    max_body_mb: float = 16.0  # per request, compressed and decompressed
    max_batch: int = 1000  # records per POST
    skew_limit_s: float = 300.0  # |device clock - hub clock| above this flags the records


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
    app.config["MAX_CONTENT_LENGTH"] = int(settings.max_body_mb * 1024 * 1024)
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.extensions["hub"] = {"engine": engine, "sessions": db.session_factory(engine), "settings": settings}
    app.secret_key = _shared_secret(app)
    app.jinja_env.globals["DISCLAIMER"] = DISCLAIMER

    from hub.api import api
    from hub.dashboard import dashboard
    from hub.fleet_api import fleet_api
    from hub.fleet_dashboard import fleet_dashboard

    app.register_blueprint(api)
    app.register_blueprint(fleet_api)
    app.register_blueprint(dashboard)
    app.register_blueprint(fleet_dashboard)

    @app.before_request
    def _start() -> None:
        g.t0 = time.perf_counter()

    @app.after_request
    def _timing(resp):  # noqa: ANN001, ANN202
        # Server-Timing lets a client (and the benchmark) see the hub's own time per request.
        t0 = g.get("t0")
        if t0 is not None:
            resp.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - t0) * 1000:.2f}"
        return resp

    @app.teardown_appcontext
    def _close(_exc: BaseException | None) -> None:
        s = g.pop("db", None)
        if s is not None:
            s.close()

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):  # noqa: ANN202
        if request.path.startswith("/api/"):
            resp = jsonify({"error": exc.name, "reason": exc.description})
            resp.status_code = exc.code or 500
            if exc.code == 401:
                resp.headers["WWW-Authenticate"] = 'Bearer realm="smearscope-hub"'
            return resp
        return exc

    @app.get("/healthz")
    def healthz():  # noqa: ANN202
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return jsonify({"ok": True})

    return app


def hub_ext(app: Flask | None = None) -> dict[str, Any]:
    from flask import current_app

    return (app or current_app).extensions["hub"]


def session():  # noqa: ANN201
    """The request's database session (closed at the end of the request)."""
    if "db" not in g:
        g.db = hub_ext()["sessions"]()
    return g.db


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
