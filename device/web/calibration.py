"""Admin page for calibration profiles (device/camera/profiles.py): automatic scale on live frames
(progress polled as JSON), stage micrometer on a frozen frame (two clicks + the known length), a
typed value, the colour reference, and the list (activate, delete, download the file)."""

from __future__ import annotations

from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import gettext

from device.camera.profiles import Profile, ProfileError
from device.errors import SmearscopeError
from device.optics import calibrate as cal
from device.optics.jobs import JobBusy
from device.pipeline.live import encode_jpeg
from device.web import advice
from device.web.security import admin_required

bp = Blueprint("calibration", __name__, url_prefix="/admin/calibration")


def _services():
    return current_app.extensions["smearscope"].services


def _flag(name: str) -> bool:
    return request.form.get(name) in ("1", "on", "true", "yes")


def _float(name: str) -> float:
    try:
        return float(request.form.get(name, ""))
    except ValueError:
        abort(400, description=f"{name}: must be a number")


def _save(profile: Profile) -> Response:
    svc = _services()
    try:
        saved = svc.profiles.save(profile, activate=_flag("activate"), replace=_flag("replace"))
    except ProfileError as exc:
        abort(400, description=str(exc))
    svc.store.add_event("info", "calibration", f"{g.user.name} saved profile {saved.name}: {saved.summary()}")
    flash(gettext("Profile %(name)s saved: %(summary)s.", name=saved.name, summary=saved.summary()))
    return redirect(url_for("calibration.page"))


def _new(name: str, um_per_px: float, method: str, **extra) -> Profile:
    try:
        return Profile(name=name, um_per_px=um_per_px, method=method, created_by=g.user.name, **extra).check()
    except ProfileError as exc:
        abort(400, description=str(exc))


@bp.route("")
@admin_required
def page():
    svc = _services()
    error = None
    try:
        profiles, active = svc.profiles.list(), svc.profiles.active_name()
    except ProfileError as exc:
        profiles, active, error = [], None, str(exc)
    status = svc.calibration_status() if hasattr(svc, "calibration_status") else {}
    return render_template(
        "calibration.html",
        camera=status,
        profiles=profiles,
        active=active,
        error=error,
        path=str(svc.profiles.path),
        cal=svc.config.calibration,
        rbc_um=svc.config.optics.rbc_diameter_um,
        job=job_view(svc.calibration.state()),
        scale=svc.scale_info() if hasattr(svc, "scale_info") else {},
        words=page_words(),
    )


def page_words() -> dict[str, str]:
    """Strings calibration.js shows, by key, in the reader's language ({name} placeholders)."""
    return {
        "delete": gettext("Delete the calibration profile “{name}”?"),
        "starting": gettext("starting…"),
        "refused": gettext("refused"),
        "auto_result": gettext(
            "{um} µm/px · red cell {px} px · {confident}/{frames} frames confident · spread {spread}%"
        ),
        "white_result": gettext("background {before} → {after} · camera controls applied: {took}"),
        "white_ignored": gettext(" · ignored by this camera: {which}"),
        "white_gain": gettext(" · software gain: {gains}"),
        "none": gettext("none"),
        "details": gettext("Details"),
        "none_needed": gettext("none needed"),
        "mic_first": gettext("Click the first end of the known length."),
        "mic_second": gettext("Now click the other end."),
        "mic_px": gettext("{px} px between the points. Type the known length (click again to re-mark)."),
    }


@bp.route("/run", methods=["POST"])
@admin_required
def run():
    """Start an automatic scale (`kind=auto`, `frames`) or colour (`kind=white`) run; JSON state."""
    data = request.get_json(silent=True) or request.form
    kind = data.get("kind", "auto")
    params = {}
    if kind == "auto":
        try:
            params["frames"] = max(
                3, min(int(data.get("frames") or _services().config.calibration.frames), 500)
            )
        except (TypeError, ValueError):
            return jsonify({"error": "frames: must be a whole number"}), 400
    try:
        state = _services().calibration.start(kind, user=g.user.name, **params)
    except JobBusy as exc:
        return jsonify(
            {"error": str(exc), "message": gettext("A measurement is running: wait for it to end.")}
        ), 409
    except SmearscopeError as exc:
        return jsonify({"error": str(exc), "message": advice.calibration_failure(str(exc)).sentence}), 400
    return jsonify(job_view(state)), 202


def job_view(job: dict[str, Any] | None) -> dict[str, Any] | None:
    """A calibration job's state in the reader's words: the step and percentage while it runs, its end
    (finished / not measured, with what to do and the engineer's reason as details)."""
    if not job:
        return None
    done, total = int(job.get("done") or 0), int(job.get("total") or 0)
    percent = min(100, round(100 * done / total)) if total else None
    state = job.get("state")
    view: dict[str, Any] = {"percent": percent, "step": "", "text": "", "sentence": "", "details": ""}
    if state == "running":
        what = gettext("Measuring the scale") if job.get("kind") == "auto" else gettext("Setting the colour")
        view["text"] = what
        if total:
            view["step"] = gettext("step %(n)s of %(m)s (%(pct)s%%)", n=done, m=total, pct=percent)
    elif state == "done":
        view["text"] = gettext("Finished: check the result below, then save it.")
        view["percent"] = 100
    else:
        said = advice.calibration_failure(job.get("error"))
        view.update(text=said.title, sentence=said.sentence, details=said.details)
    return {**job, "view": view}


@bp.route("/job")
@admin_required
def job():
    return jsonify({"job": job_view(_services().calibration.state())})


@bp.route("/save", methods=["POST"])
@admin_required
def save():
    """Keep a finished run: an automatic scale as a new profile, a colour reference into a profile."""
    svc = _services()
    state = svc.calibration.state() or {}
    result = svc.calibration.result(request.form.get("job", ""))
    if result is None:
        abort(400, description=gettext("no finished calibration with that id: run it again"))
    name = request.form.get("name", "")
    if state.get("kind") == "white":
        try:
            p = svc.profiles.update(name, controls=result["controls"], white_gains=result["white_gains"])
        except ProfileError as exc:
            abort(400, description=str(exc))
        svc.store.add_event("info", "calibration", f"{g.user.name} fixed the colour of profile {p.name}")
        flash(gettext("Colour reference saved in %(name)s.", name=p.name))
        return redirect(url_for("calibration.page"))
    camera = svc.camera_source.describe() if getattr(svc, "camera_source", None) else ""
    prof = _new(name, round(result["um_per_px"], 6), "auto", camera=camera)
    prof.spread, prof.n_frames = round(result["spread"], 4), result["n_confident"]
    return _save(prof)


@bp.route("/freeze", methods=["POST"])
@admin_required
def freeze():
    try:
        token, rgb = _services().calibration.freeze()
    except SmearscopeError as exc:
        return jsonify({"error": str(exc)}), 409
    return jsonify(
        {
            "token": token,
            "width": int(rgb.shape[1]),
            "height": int(rgb.shape[0]),
            "url": url_for("calibration.frozen", token=token),
        }
    )


@bp.route("/frozen/<token>.jpg")
@admin_required
def frozen(token: str):
    rgb = _services().calibration.frozen(token)
    if rgb is None:
        abort(404, description=gettext("that frozen frame is gone: freeze a new one"))
    return Response(encode_jpeg(rgb, 92), mimetype="image/jpeg", headers={"Cache-Control": "no-store"})


@bp.route("/micrometer", methods=["POST"])
@admin_required
def micrometer():
    token = request.form.get("token", "")
    if _services().calibration.frozen(token) is None:
        abort(400, description=gettext("freeze a frame and mark two points on it first"))
    p1, p2 = (_float("x1"), _float("y1")), (_float("x2"), _float("y2"))
    length = _float("length_um")
    try:
        um, px = cal.micrometer_scale(length, p1, p2)
    except cal.CalibrationRefused as exc:
        abort(400, description=str(exc))
    mic = {"length_um": length, "length_px": round(px, 2), "points": [list(p1), list(p2)]}
    return _save(_new(request.form.get("name", ""), round(um, 6), "micrometer", micrometer=mic))


@bp.route("/typed", methods=["POST"])
@admin_required
def typed():
    return _save(_new(request.form.get("name", ""), _float("um_per_px"), "typed"))


@bp.route("/activate", methods=["POST"])
@admin_required
def activate():
    try:
        p = _services().set_active_profile(request.form.get("name", ""), g.user.name)
    except ProfileError as exc:
        abort(400, description=str(exc))
    flash(gettext("Active profile: %(name)s.", name=p.name))
    return redirect(url_for("calibration.page"))


@bp.route("/remove", methods=["POST"])
@admin_required
def remove():
    name = request.form.get("name", "")
    svc = _services()
    try:
        svc.profiles.remove(name)
    except ProfileError as exc:
        abort(400, description=str(exc))
    svc.store.add_event("info", "calibration", f"{g.user.name} removed profile {name}")
    flash(gettext("Profile %(name)s removed.", name=name))
    return redirect(url_for("calibration.page"))


@bp.route("/profiles.toml")
@admin_required
def download():
    text = _services().profiles.export_text()
    return Response(
        text,
        mimetype="application/toml",
        headers={"Content-Disposition": 'attachment; filename="profiles.toml"'},
    )
