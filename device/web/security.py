"""Request-level security: who is asking (session or API key), login/role guards, CSRF.

Rules:
- every page, stream and API call needs a logged-in user, except `/healthz`, `/login`, static files
  and — when `[web] open_live_view` is true — the read-only live view and its streams;
- `Authorization: Bearer KEY` authenticates scripts; such requests carry no cookie, so they are exempt
  from CSRF (a browser cannot be made to send that header cross-site);
- every state-changing request from a session (POST/PUT/PATCH/DELETE) must carry the session's CSRF
  token, as form field `csrf_token` or header `X-CSRF-Token`;
- admin-only endpoints are marked with `@admin_required`.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import abort, current_app, g, jsonify, redirect, request, session, url_for
from flask_babel import gettext

from device.web import auth

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Endpoints anyone may reach.
PUBLIC_ENDPOINTS = frozenset({"system.healthz", "account.login", "account.language", "static"})
#: Endpoints reachable without login when [web] open_live_view = true (read-only).
LIVE_ENDPOINTS = frozenset(
    {"live.page", "live.stream", "live.events", "live.heatmap", "live.frame", "live.result"}
)

ADMIN_ATTR = "_smearscope_admin_only"


def admin_required(view: Callable) -> Callable:
    setattr(view, ADMIN_ATTR, True)
    return view


def wants_json() -> bool:
    return (
        request.path.startswith("/api/")
        or request.path == "/metrics"
        or request.accept_mimetypes.best == "application/json"
    )


def csrf_token() -> str:
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = auth.new_csrf_token()
    return token


def _deny(status: int, message: str):
    if wants_json():
        resp = jsonify({"error": message})
        resp.status_code = status
        if status == 401:
            resp.headers["WWW-Authenticate"] = 'Bearer realm="smearscope"'
        abort(resp)
    if status == 401:
        abort(redirect(url_for("account.login", next=request.full_path.rstrip("?"))))
    abort(status, description=message)


def load_user() -> None:
    """before_request: set g.user (or None) and g.via ('session' | 'apikey' | None)."""
    g.user = None
    g.via = None
    conn = current_app.extensions["smearscope"].conn()
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        user = auth.verify_api_key(conn, header[7:].strip())
        if user is None:
            _deny(401, gettext("invalid or revoked API key"))
        g.user, g.via = user, "apikey"
        return
    name = session.get("user")
    if name:
        user = auth.get_user(conn, name)
        if (
            user is None
            or user.disabled
            or session.get("stamp") != user.session_stamp
            or auth.session_user(conn, session.get("sid")) != user.name
        ):
            session.clear()  # logged out, removed, disabled or password changed: log this browser out
        else:
            g.user, g.via = user, "session"


def enforce() -> None:
    """before_request (after load_user): login, CSRF, role."""
    endpoint = request.endpoint or ""
    if endpoint in PUBLIC_ENDPOINTS or endpoint.endswith(".static"):
        return
    ext = current_app.extensions["smearscope"]
    open_live = (
        ext.config.web.open_live_view and endpoint in LIVE_ENDPOINTS and request.method in SAFE_METHODS
    )
    if g.user is None and not open_live:
        _deny(401, gettext("login required"))
    if request.method not in SAFE_METHODS and g.via != "apikey":
        given = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token")
        if not auth.csrf_ok(session.get("csrf"), given):
            _deny(400, gettext("missing or wrong CSRF token: reload the page and try again"))
    view = current_app.view_functions.get(endpoint)
    if view is not None and getattr(view, ADMIN_ATTR, False) and not (g.user and g.user.is_admin):
        _deny(403, gettext("admins only"))


def login_session(user: auth.User) -> None:
    """Start a server-side session (a `web_sessions` row) and point the signed cookie at it."""
    ext = current_app.extensions["smearscope"]
    conn = ext.conn()
    auth.end_session(conn, session.get("sid"))
    sid = auth.create_session(conn, user.name, ext.config.web.session_minutes)
    session.clear()
    session.permanent = True
    session["user"] = user.name
    session["sid"] = sid
    session["stamp"] = user.session_stamp
    session["csrf"] = auth.new_csrf_token()


def logout_session() -> None:
    """End this browser's session on the server too: the old cookie opens nothing afterwards."""
    auth.end_session(current_app.extensions["smearscope"].conn(), session.get("sid"))
    session.clear()


def client_addr() -> str:
    return request.remote_addr or "?"


def require_admin() -> None:
    if not (g.user and g.user.is_admin):
        _deny(403, gettext("admins only"))
