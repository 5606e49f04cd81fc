"""Device and reader routes for updates flowing down (`/api/v1/models/...`):

- `GET  /api/v1/models/current`          the bundle set current for the calling station (or null)
- `GET  /api/v1/models/files/<sha256>`   one published file; `Range: bytes=N-[M]` answers 206, so a
                                         station resumes a cut download where it stopped
- `POST /api/v1/models/installed`        the station reports what it runs and how its update went
- `GET  /api/v1/fleet`                   (readers) which station runs what, and what is current for it
"""

from __future__ import annotations

import re

from flask import Blueprint, Response, abort, g, jsonify, request
from sqlalchemy import func, select

from hub.api_common import check_sha, json_body, requires
from hub.extensions import session
from hub.fleet.tables import BundleBlob
from hub.fleet.updates import current_set, fleet_overview, record_report, set_json

fleet_api = Blueprint("fleet_api", __name__, url_prefix="/api/v1")

RANGE_RE = re.compile(r"^bytes=(\d+)-(\d*)$")


@fleet_api.get("/models/current")
@requires("device")
def models_current() -> Response:
    s = session()
    return jsonify({"set": set_json(s, current_set(s, g.device.id))})


@fleet_api.get("/models/files/<sha>")
@requires("device", "user")
def models_file(sha: str) -> Response | tuple[Response, int]:
    check_sha(sha)
    s = session()
    size = s.scalar(select(BundleBlob.size).where(BundleBlob.sha256 == sha))
    if size is None:
        abort(404, f"no published file {sha}")
    start, end = 0, size - 1
    partial = False
    rng = request.headers.get("Range")
    if rng:
        m = RANGE_RE.match(rng.strip())
        if m is None:
            abort(416, "only one 'bytes=START-[END]' range is supported")
        start = int(m.group(1))
        end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
        if start >= size or end < start:
            resp = jsonify({"error": "Range Not Satisfiable", "reason": f"file has {size} bytes"})
            resp.headers["Content-Range"] = f"bytes */{size}"
            return resp, 416
        partial = True
    length = end - start + 1
    data = s.scalar(select(func.substr(BundleBlob.data, start + 1, length)).where(BundleBlob.sha256 == sha))
    resp = Response(bytes(data or b""), mimetype="application/octet-stream")
    resp.headers["Accept-Ranges"] = "bytes"
    resp.headers["ETag"] = f'"{sha}"'
    resp.headers["Cache-Control"] = "private, max-age=31536000, immutable"
    if partial:
        resp.status_code = 206
        resp.headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    return resp


@fleet_api.post("/models/installed")
@requires("device")
def models_installed() -> tuple[Response, int]:
    body = json_body()
    if not isinstance(body, dict):
        abort(422, "body must be a JSON object")
    try:
        record_report(session(), g.device.id, body)
    except ValueError as exc:
        abort(422, str(exc))
    return jsonify({"ok": True}), 200


@fleet_api.get("/fleet")
@requires("user")
def fleet() -> Response:
    return jsonify({"devices": fleet_overview(session())})
