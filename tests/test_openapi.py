"""docs/openapi.yaml is a valid OpenAPI 3.0 document (openapi-spec-validator), describes every JSON
route with its methods, and the station's real answers (Services with the tiny bundle, Flask's test
client) match the schema it gives for their path, method and status."""

from __future__ import annotations

import io

import cv2
import pytest
from openapikit import check, check_status, documented_operations, flask_operations, load, problems
from test_pipeline import make_config, wait_for

from device.web import auth, create_app

SPEC = load("openapi.yaml")


def test_the_document_is_valid():
    assert problems(SPEC) == []


def test_the_checks_catch_yaml_typing_and_wrong_bodies():
    """The walk finds `[yes, no]` loaded as booleans; a body of the wrong shape fails the check."""
    bad = {**SPEC, "paths": {"/x": {"get": {"parameters": [
        {"name": "u", "in": "query", "schema": {"type": "string", "enum": [True, False, "any"]}}
    ], "responses": {"200": {"description": "x"}}}}}}  # fmt: skip
    assert any("value True is not a string" in p for p in problems(bad))

    class Fake:
        status_code = 200

        @staticmethod
        def get_json():
            return {"id": "r1", "results": [{"id": 5, "seq": "one"}], "next_before": None}

    with pytest.raises(AssertionError, match="results/0"):
        check(SPEC, "/api/v1/results", "GET", Fake)


@pytest.fixture(scope="module")
def station(tmp_path_factory, request):
    """A running station (replay camera over the sample smears, the tiny bundle) and an API key."""
    from device.services import Services

    tmp = tmp_path_factory.mktemp("station")
    bundle = request.getfixturevalue("tiny_bundle_module")
    frames = request.getfixturevalue("sample_images_module")
    cfg = make_config(tmp, bundle, frames[0].parent)
    svc = Services(cfg, sync=False)
    app = create_app(cfg, svc)
    app.config["TESTING"] = True
    auth.add_user(svc.store.conn, "tech", "technician", "correct-horse-1")
    key = auth.new_api_key(svc.store.conn, "tech")
    svc.start()
    try:
        assert wait_for(lambda: svc.live.latest_result() is not None, 60)
        yield app.test_client(), {"Authorization": f"Bearer {key}"}, frames
    finally:
        svc.stop()


@pytest.fixture(scope="module")
def tiny_bundle_module(tmp_path_factory):
    import shutil

    from make_tiny_bundle import SIGNED_TINY

    dst = tmp_path_factory.mktemp("bundle") / "tiny-bundle"
    shutil.copytree(SIGNED_TINY, dst)
    return dst


@pytest.fixture(scope="module")
def sample_images_module(tmp_path_factory):
    import numpy as np
    from make_tiny_bundle import LABELS, synth_smear

    folder = tmp_path_factory.mktemp("samples")
    rng = np.random.default_rng(1)
    paths = []
    for label in LABELS:
        path = folder / f"{label}.jpg"
        cv2.imwrite(str(path), cv2.cvtColor(synth_smear(label, rng), cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths


def test_every_json_route_is_described_with_its_methods(station):
    client = station[0]
    app = client.application
    routes = flask_operations(app, lambda r: r.startswith("/api/") or r in ("/healthz", "/metrics"))
    assert routes == documented_operations(SPEC)


def test_the_stations_answers_match_the_document(station):
    client, bearer, frames = station
    seen: set[tuple[str, str, int]] = set()

    def call(method: str, url: str, path: str, **kw):
        r = client.open(url, method=method, headers=bearer, **kw)
        check_status(SPEC, path, method, r)
        if r.mimetype == "application/json":
            check(SPEC, path, method, r)
        seen.add((path, method, r.status_code))
        return r

    assert client.get("/healthz").status_code == 200
    check(SPEC, "/healthz", "GET", client.get("/healthz"))
    for path, method in sorted(documented_operations(SPEC) - {("/healthz", "GET")}):
        url = path.replace("{result_id}", "r").replace("{sample_id}", "s")
        r = client.open(url, method=method)
        assert r.status_code == 401, (method, path)
        if path != "/metrics":
            check(SPEC, path, method, r)
    call("GET", "/api/status", "/api/status")
    assert call("GET", "/metrics", "/metrics").mimetype == "text/plain"
    call("GET", "/api/v1/status", "/api/v1/status")
    call("GET", "/api/v1/live", "/api/v1/live")
    sample = call("POST", "/api/v1/samples", "/api/v1/samples", json={"slide_id": "S-1", "notes": "n"})
    sid = sample.get_json()["id"]
    call("POST", "/api/v1/samples", "/api/v1/samples", json={})  # 400
    jpeg = frames[0].read_bytes()
    up = call(
        "POST",
        "/api/v1/classify",
        "/api/v1/classify",
        data={"file": [(io.BytesIO(jpeg), "a.jpg")], "sample": sid, "um_per_px": "auto"},
    )
    assert up.status_code == 200, up.get_json()
    rid = up.get_json()["results"][0]["id"]
    call("POST", "/api/v1/classify", "/api/v1/classify", data={"file": [(io.BytesIO(b"GIF89a"), "b.gif")]})
    call("POST", "/api/v1/classify", "/api/v1/classify", data={})  # 400
    call("POST", "/api/v1/capture", "/api/v1/capture", json={"sample": sid})
    call("GET", "/api/v1/results?limit=2", "/api/v1/results")
    call("GET", "/api/v1/results?uncertain=maybe", "/api/v1/results")  # 400
    call("GET", f"/api/v1/results/{rid}", "/api/v1/results/{result_id}")
    call("GET", "/api/v1/results/nope", "/api/v1/results/{result_id}")  # 404
    call("POST", f"/api/v1/results/{rid}/review", "/api/v1/results/{result_id}/review", json={"label": "Pro"})
    call("POST", f"/api/v1/results/{rid}/review", "/api/v1/results/{result_id}/review", json={"label": "X"})
    call("GET", "/api/v1/samples", "/api/v1/samples")
    call("GET", f"/api/v1/samples/{sid}", "/api/v1/samples/{sample_id}")
    call("GET", "/api/v1/samples/nope", "/api/v1/samples/{sample_id}")
    call("POST", f"/api/v1/samples/{sid}/finish", "/api/v1/samples/{sample_id}/finish")
    call("GET", f"/api/v1/samples/{sid}", "/api/v1/samples/{sample_id}")  # finished: frozen summary
    call("POST", "/api/v1/capture", "/api/v1/capture", json={"sample": sid})  # 409 finished
    call("GET", "/api/v1/profiles", "/api/v1/profiles")
    call("POST", "/api/v1/profiles/active", "/api/v1/profiles/active", json={"name": "none"})  # 404
    call("GET", f"/api/v1/export?sample={sid}", "/api/v1/export")
    call("GET", "/api/v1/export?from=garbage", "/api/v1/export")  # 400
    must = {
        ("/api/v1/classify", "POST", 200),
        ("/api/v1/classify", "POST", 415),
        ("/api/v1/results/{result_id}", "GET", 200),
        ("/api/v1/results/{result_id}/review", "POST", 201),
        ("/api/v1/results/{result_id}/review", "POST", 400),
        ("/api/v1/samples", "POST", 201),
        ("/api/v1/samples/{sample_id}/finish", "POST", 200),
        ("/api/v1/export", "GET", 200),
        ("/api/v1/export", "GET", 400),
    }
    assert must <= seen, must - seen
    assert seen & {("/api/v1/capture", "POST", 201), ("/api/v1/capture", "POST", 409)}
