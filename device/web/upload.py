"""Upload page: classify images exported by microscope software into a sample."""

from __future__ import annotations

from flask import Blueprint, current_app, g, render_template, request, session
from flask_babel import gettext

from device.web import advice
from device.web.classify import classify_files
from device.web.live import labels_info
from device.web.upload_check import UploadRejected

bp = Blueprint("upload", __name__)

#: A file uploaded through the page usually comes from another microscope: its scale is estimated from
#: its red cells unless the technician says otherwise (the JSON API keeps "profile", as documented).
DEFAULT_SCALE = "auto"


def form_scale(form) -> str:
    """The form's scale: a typed number whenever one is filled in, else the chosen radio."""
    return (form.get("um_per_px_typed") or "").strip() or form.get("um_per_px") or DEFAULT_SCALE


@bp.route("/upload", methods=["GET", "POST"])
def page():
    ext = current_app.extensions["smearscope"]
    open_samples = ext.store.list_samples(status="open", limit=50)
    results, error, status = [], None, 200
    chosen = request.form.get("sample") if request.method == "POST" else session.get("sample")
    scale_value = form_scale(request.form)
    if request.method == "POST":
        try:
            if scale_value == "typed":
                raise UploadRejected(
                    400,
                    gettext("type the images' scale in µm per pixel, or choose another scale"),
                    "scale",
                )
            results = classify_files(
                request.files.getlist("file"),
                request.form.get("sample"),
                g.user.name,
                scale_value,
            )
        except UploadRejected as exc:
            error, status = advice.upload_refusal(exc.kind, exc.message), exc.status
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
            scale_choice=scale_value if request.method == "POST" else DEFAULT_SCALE,
        ),
        status,
    )
