"""Upload page: classify images exported by microscope software into a sample."""

from __future__ import annotations

from flask import Blueprint, current_app, g, render_template, request, session

from device.web.classify import classify_files
from device.web.live import labels_info
from device.web.upload_check import UploadRejected

bp = Blueprint("upload", __name__)


@bp.route("/upload", methods=["GET", "POST"])
def page():
    ext = current_app.extensions["smearscope"]
    open_samples = ext.store.list_samples(status="open", limit=50)
    results, error, status = [], None, 200
    chosen = request.form.get("sample") if request.method == "POST" else session.get("sample")
    scale_value = (request.form.get("um_per_px_typed") or "").strip() or request.form.get("um_per_px")
    if request.method == "POST":
        try:
            results = classify_files(
                request.files.getlist("file"),
                request.form.get("sample"),
                g.user.name,
                scale_value,
            )
        except UploadRejected as exc:
            error, status = exc.message, exc.status
    return (
        render_template(
            "upload.html",
            open_samples=open_samples,
            chosen=chosen,
            results=results,
            error=error,
            labels=labels_info(ext.services),
            max_mb=ext.config.web.max_upload_mb,
            scale=ext.services.scale_info(),
            scale_choice=(scale_value or "profile") if request.method == "POST" else "profile",
        ),
        status,
    )
