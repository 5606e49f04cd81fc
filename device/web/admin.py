"""Admin-only pages: the index, user accounts and API keys, the effective settings, sync quarantine."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, flash, g, redirect, render_template, request, url_for
from flask_babel import gettext, ngettext

from device.web import auth
from device.web.security import admin_required

bp = Blueprint("admin", __name__, url_prefix="/admin")


def _conn():
    return current_app.extensions["smearscope"].conn()


@bp.route("")
@admin_required
def index():
    """The admins' pages in one place."""
    return render_template("admin.html")


@bp.route("/users")
@admin_required
def users():
    return render_template("users.html", users=auth.list_users(_conn()), new_key=None, key_user=None)


def _keep_an_admin(conn, name: str, *, removing_admin: bool) -> None:
    user = auth.get_user(conn, name)
    if removing_admin and user and user.is_admin and not user.disabled and auth.count_admins(conn) <= 1:
        abort(400, description=gettext("this is the last admin account: make another admin first"))


@bp.route("/users", methods=["POST"])
@admin_required
def user_action():
    conn = _conn()
    action = request.form.get("action", "")
    name = (request.form.get("name") or "").strip()
    try:
        if action == "add":
            auth.add_user(
                conn, name, request.form.get("role", "technician"), request.form.get("password", "")
            )
            flash(gettext("User %(name)s added.", name=name))
        elif action == "role":
            role = request.form.get("role", "")
            _keep_an_admin(conn, name, removing_admin=role != "admin")
            auth.set_role(conn, name, role)
            flash(
                gettext(
                    "%(name)s is now %(role)s.",
                    name=name,
                    role=gettext("admin") if role == "admin" else gettext("technician"),
                )
            )
        elif action in ("disable", "enable"):
            if action == "disable":
                _keep_an_admin(conn, name, removing_admin=True)
            auth.set_disabled(conn, name, action == "disable")
            flash(
                gettext("User %(name)s disabled.", name=name)
                if action == "disable"
                else gettext("User %(name)s enabled.", name=name)
            )
        elif action == "password":
            auth.set_password(conn, name, request.form.get("password", ""))
            flash(gettext("Password of %(name)s changed; their sessions are logged out.", name=name))
        elif action == "remove":
            _keep_an_admin(conn, name, removing_admin=True)
            auth.remove_user(conn, name)
            flash(gettext("User %(name)s removed.", name=name))
        elif action == "apikey":
            key = auth.new_api_key(conn, name)
            return render_template("users.html", users=auth.list_users(conn), new_key=key, key_user=name)
        elif action == "revoke":
            n = auth.revoke_api_keys(conn, name)
            flash(
                ngettext(
                    "%(num)d API key of %(name)s revoked.",
                    "%(num)d API keys of %(name)s revoked.",
                    n,
                    name=name,
                )
            )
        else:
            abort(400, description=f"unknown action {action!r}")
    except auth.AuthError as exc:
        abort(400, description=str(exc))
    if name == g.user.name and action in ("remove", "disable", "password"):
        return redirect(url_for("account.login"))
    return redirect(url_for("admin.users"))


@bp.route("/settings")
@admin_required
def settings():
    cfg = current_app.extensions["smearscope"].config
    return render_template(
        "settings.html", config=cfg.to_dict(redact=True), source=getattr(cfg, "source", "")
    )


@bp.route("/sync")
@admin_required
def sync():
    """Records the hub refused (quarantined), with its reason, and a button to queue them again."""
    from device.sync import Outbox

    store = current_app.extensions["smearscope"].store
    return render_template("sync.html", rejected=Outbox(store).rejected(limit=100))


@bp.route("/sync/retry", methods=["POST"])
@admin_required
def sync_retry():
    from device.sync import Outbox

    ext = current_app.extensions["smearscope"]
    n = Outbox(ext.store).retry_rejected()
    ext.store.add_event("info", "sync", f"{g.user.name} queued {n} quarantined record(s) again")
    flash(ngettext("%(num)d record queued for sync again.", "%(num)d records queued for sync again.", n))
    return redirect(url_for("admin.sync"))


@bp.route("/models/accept-update", methods=["POST"])
@admin_required
def accept_model_update():
    """Install the bundle set the hub sent and the station verified (`update_policy = "manual"`)."""
    from device.errors import SmearscopeError

    ext = current_app.extensions["smearscope"]
    allow_downgrade = request.form.get("allow_downgrade") == "1"  # the admin ticked it, on purpose
    try:
        result = ext.services.accept_model_update(allow_downgrade=allow_downgrade)
    except SmearscopeError as exc:
        flash(gettext("Not installed: %(why)s", why=exc))
        return redirect(url_for("system.models_page"))
    what = "a model downgrade" if allow_downgrade else "the model update"
    ext.store.add_event("info", "models", f"{g.user.name} accepted {what}: {result.get('state')}")
    if result.get("state") == "installed":
        flash(
            gettext(
                "Model update installed and in service: %(bundles)s.",
                bundles=", ".join(result.get("bundles", [])),
            )
        )
    else:
        flash(
            gettext(
                "Model update %(state)s: %(reason)s — the current models stay.",
                state=result.get("state"),
                reason=result.get("reason", ""),
            )
        )
    return redirect(url_for("system.models_page"))
