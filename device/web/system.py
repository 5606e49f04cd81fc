"""Models and status pages, and the root routes: /healthz (open), /api/status, /metrics."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, abort, current_app, jsonify, render_template, send_from_directory
from flask_babel import gettext

from device.web.models_info import IMAGE_SUFFIXES, find_bundle_dir, installed_bundles
from device.web.status_view import sections

bp = Blueprint("system", __name__)


def _ext():
    return current_app.extensions["smearscope"]


def status_body() -> dict:
    ext = _ext()
    body = ext.services.status()
    body.setdefault("storage", ext.store.storage_state()["state"])
    return body


@bp.route("/healthz")
def healthz():
    """Liveness for systemd/monitoring: no login, no patient data. A full disk is a state the daemon
    lives with (classification goes on), so it is reported (`storage: "full"`), not a failure."""
    ext = _ext()
    try:
        ext.conn().execute("SELECT 1").fetchone()
    except Exception as exc:  # noqa: BLE001
        return jsonify({"ok": False, "error": f"database: {exc}"}), 503
    try:
        storage = ext.store.storage_state()["state"]
    except Exception:  # noqa: BLE001 - a status probe must not fail on it
        storage = "unknown"
    return jsonify({"ok": True, "storage": storage})


@bp.route("/api/status")
def api_status():
    return jsonify(status_body())


@bp.route("/metrics")
def metrics():
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

    registry = getattr(_ext().services, "registry", None) or REGISTRY
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def _scale_info(services) -> dict:
    try:
        return services.scale_info()
    except Exception:  # noqa: BLE001 - a stand-in without models: the page says "unknown"
        return {}


@bp.route("/status")
def status_page():
    ext = _ext()
    body = status_body()
    return render_template(
        "status.html",
        status=body,
        status_sections=sections(body),
        events=ext.store.recent_events(30),
        scale=_scale_info(ext.services),
    )


@bp.route("/models")
def models_page():
    ext = _ext()
    update_status = getattr(ext.services, "model_update_status", None)
    return render_template(
        "models.html",
        bundles=installed_bundles(ext.config, ext.services),
        update=update_status() if update_status else None,
    )


@bp.route("/models/<name>/<path:filename>")
def model_file(name: str, filename: str):
    """Report plots of a bundle (confusion matrix...). Images only; send_from_directory refuses ../."""
    ext = _ext()
    if Path(filename).suffix.lower() not in IMAGE_SUFFIXES:
        abort(404)
    bundle_dir = find_bundle_dir(ext.config, ext.services, name)
    if bundle_dir is None:
        abort(404, description=gettext("no bundle %(name)s", name=name))
    return send_from_directory(bundle_dir, filename, max_age=3600)
