"""Login, logout and changing one's own password."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, session, url_for
from flask_babel import gettext

from device.web import auth, i18n, security

bp = Blueprint("account", __name__)


def _safe_next(target: str | None) -> str:
    """Only same-site relative paths (no open redirect to another host)."""
    if not target:
        return url_for("live.page")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("live.page")
    return target


@bp.route("/login", methods=["GET", "POST"])
def login():
    ext = current_app.extensions["smearscope"]
    error = None
    status = 200
    retry = 0
    if request.method == "POST":
        # The login form carries a CSRF token too (login CSRF); the session holds it from the GET.
        if not auth.csrf_ok(session.get("csrf"), request.form.get("csrf_token")):
            error, status = gettext("The form expired: please try again."), 400
        else:
            name = request.form.get("username", "").strip()
            password = request.form.get("password", "")
            addr = security.client_addr()
            wait = ext.limiter.retry_after(addr, name)
            if wait > 0:
                retry = int(wait) + 1
                error, status = gettext("Too many failed logins: try again in %(n)s s.", n=retry), 429
            else:
                user = auth.verify_password(ext.conn(), name, password)
                if user is None:
                    known = auth.get_user(ext.conn(), name) is not None
                    ext.limiter.failed(addr, name, known_user=known)
                    error, status = gettext("Wrong user name or password."), 401
                else:
                    ext.limiter.succeeded(addr, name)
                    security.login_session(user)
                    return redirect(_safe_next(request.args.get("next")))
    no_users = ext.conn().execute("SELECT COUNT(*) FROM users").fetchone()[0] == 0
    resp = current_app.make_response((render_template("login.html", error=error, no_users=no_users), status))
    if status == 429:
        resp.headers["Retry-After"] = str(retry)
    return resp


@bp.route("/logout", methods=["POST"])
def logout():
    security.logout_session()
    return redirect(url_for("account.login"))


@bp.route("/account", methods=["GET", "POST"])
def account():
    ext = current_app.extensions["smearscope"]
    error = None
    if request.method == "POST":
        conn = ext.conn()
        if auth.verify_password(conn, g.user.name, request.form.get("current", "")) is None:
            error = gettext("The current password is wrong.")
        elif request.form.get("new", "") != request.form.get("repeat", ""):
            error = gettext("The two new passwords differ.")
        else:
            try:
                auth.set_password(conn, g.user.name, request.form.get("new", ""))
            except auth.AuthError as exc:
                error = str(exc)
            else:
                security.login_session(auth.get_user(conn, g.user.name))
                flash(gettext("Password changed."))
                return redirect(url_for("account.account"))
    return render_template("account.html", error=error), (400 if error else 200)


@bp.route("/language", methods=["POST"])
def language():
    """The language picker: remembered for the user (when logged in) and in a cookie (the login page)."""
    code = i18n.known(request.form.get("language"))
    back = _safe_next(request.form.get("next"))
    # public (the login page has it too), so the CSRF check is here rather than in security.enforce
    if code is None or not auth.csrf_ok(session.get("csrf"), request.form.get("csrf_token")):
        return redirect(back)
    if g.get("user") is not None:
        auth.set_language(current_app.extensions["smearscope"].conn(), g.user.name, code)
    resp = redirect(back)
    resp.set_cookie(
        i18n.COOKIE,
        code,
        max_age=i18n.COOKIE_DAYS * 86400,
        httponly=True,
        samesite="Lax",
        secure=current_app.config.get("SESSION_COOKIE_SECURE", False),
    )
    return resp
