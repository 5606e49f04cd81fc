"""docs/hub-openapi.yaml is a valid OpenAPI 3.0 document, describes every hub API route with its
methods, and a real hub's answers (and the bodies a station's store sends it) match it."""

from __future__ import annotations

import gzip
import hashlib
import json
import uuid

import pytest
from hubkit import Hub, fill_store
from make_tiny_bundle import SIGNED_TINY, TEST_PUB
from openapikit import (
    check,
    check_request,
    check_status,
    documented_operations,
    flask_operations,
    load,
    problems,
)
from updatekit import publish

from device.store import Store

SPEC = load("hub-openapi.yaml")


def test_the_document_is_valid():
    assert problems(SPEC) == []


@pytest.fixture
def hub(tmp_path):
    return Hub(f"sqlite:///{tmp_path / 'hub.db'}")


def test_every_api_route_is_described_with_its_methods(hub):
    routes = flask_operations(hub.app, lambda r: r.startswith("/api/") or r == "/healthz")
    documented = documented_operations(SPEC)
    assert routes == documented - {("/api/v1/images/{sha}", "HEAD")}
    assert "HEAD" in next(r.methods for r in hub.app.url_map.iter_rules() if r.rule == "/api/v1/images/<sha>")


def test_the_hubs_answers_match_the_document(hub, tmp_path):
    c = hub.client()
    dev, usr = hub.dev(), hub.usr()
    seen: set[tuple[str, str, int]] = set()

    def call(method: str, url: str, path: str, headers: dict, **kw):
        r = c.open(url, method=method, headers=headers, **kw)
        check_status(SPEC, path, method, r)
        if r.mimetype == "application/json":
            check(SPEC, path, method, r)
        seen.add((path, method, r.status_code))
        return r

    def post_json(url: str, path: str, body, headers=dev):
        return call("POST", url, path, headers, json=body)

    store = Store(tmp_path / "station", reserve_bytes=0)
    fill_store(store, 3)
    records = store.list_results(limit=10)
    sample = store.list_samples(limit=1)[0]
    shas = [r["image_sha256"] for r in records]
    check(SPEC, "/healthz", "GET", c.get("/healthz"))
    for path, method in sorted(documented_operations(SPEC) - {("/healthz", "GET")}):
        url = path.replace("{sha}", "0" * 64).replace("{rid}", str(uuid.uuid4()))
        r = c.open(url, method=method)
        assert r.status_code == 401, (method, path)
        if method != "HEAD":
            check(SPEC, path, method, r)
    call("GET", "/api/v1/ping", "/api/v1/ping", dev)
    call("GET", "/api/v1/ping", "/api/v1/ping", {"Authorization": "Bearer nope"})  # 401
    have = {"sha256": shas}
    check_request(SPEC, "/api/v1/images/have", "POST", have)
    assert post_json("/api/v1/images/have", "/api/v1/images/have", have).get_json()["missing"]
    post_json("/api/v1/images/have", "/api/v1/images/have", {"sha256": ["x"]})  # 422
    for sha in shas:
        data = store.image_path(sha).read_bytes()
        call("PUT", f"/api/v1/images/{sha}", "/api/v1/images/{sha}", dev, data=data)  # 201
    call("PUT", f"/api/v1/images/{shas[-1]}", "/api/v1/images/{sha}", dev, data=data)  # 200 exists
    call("PUT", f"/api/v1/images/{shas[0]}", "/api/v1/images/{sha}", dev, data=b"\xff\xd8x")  # 422
    call("PUT", "/api/v1/images/nothex", "/api/v1/images/{sha}", dev, data=b"x")  # 404
    assert c.head(f"/api/v1/images/{shas[0]}", headers=dev).status_code == 200
    call("GET", f"/api/v1/images/{shas[0]}", "/api/v1/images/{sha}", dev)  # 403
    assert call("GET", f"/api/v1/images/{shas[0]}", "/api/v1/images/{sha}", usr).mimetype == "image/jpeg"
    call("GET", f"/api/v1/images/{'0' * 64}", "/api/v1/images/{sha}", usr)  # 404
    batch = {"records": records, "sent_at": records[0]["captured_at"]}
    check_request(SPEC, "/api/v1/results", "POST", batch)
    r = c.post(
        "/api/v1/results",
        data=gzip.compress(json.dumps(batch).encode()),
        headers={**dev, "Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert r.status_code == 200 and check(SPEC, "/api/v1/results", "POST", r)["counts"]["accepted"] == 3
    post_json("/api/v1/results", "/api/v1/results", batch)  # 200, duplicates
    bad = {"records": [{**records[0], "id": str(uuid.uuid4()), "label": ""}]}
    assert post_json("/api/v1/results", "/api/v1/results", bad).status_code == 422  # all rejected
    post_json("/api/v1/results", "/api/v1/results", {"records": "no"})  # 422 envelope
    check_request(SPEC, "/api/v1/samples", "POST", {"samples": [sample]})
    post_json("/api/v1/samples", "/api/v1/samples", {"samples": [sample]})
    post_json("/api/v1/samples", "/api/v1/samples", {"samples": [{"id": "x"}]})  # 422 all rejected
    call("GET", "/api/v1/results?limit=2", "/api/v1/results", usr)
    call("GET", "/api/v1/results?label=%00", "/api/v1/results", usr)  # 400
    call("GET", "/api/v1/results", "/api/v1/results", dev)  # 401: a device cannot read
    call("GET", f"/api/v1/results/{records[0]['id']}", "/api/v1/results/{rid}", usr)
    call("GET", "/api/v1/results/nope", "/api/v1/results/{rid}", usr)  # 404
    call("GET", "/api/v1/stats", "/api/v1/stats", usr)
    call("GET", "/api/v1/devices", "/api/v1/devices", usr)
    call("GET", "/api/v1/models/current", "/api/v1/models/current", dev)  # {"set": null}
    call("GET", "/api/v1/fleet", "/api/v1/fleet", usr)
    publish(hub, [SIGNED_TINY], TEST_PUB)
    current = call("GET", "/api/v1/models/current", "/api/v1/models/current", dev).get_json()["set"]
    f = current["bundles"][0]["files"][0]
    url = f"/api/v1/models/files/{f['sha256']}"
    whole = call("GET", url, "/api/v1/models/files/{sha}", dev)
    assert hashlib.sha256(whole.data).hexdigest() == f["sha256"]
    part = c.get(url, headers={**dev, "Range": "bytes=1-"})
    assert part.status_code == 206 and part.data == whole.data[1:]
    call("GET", url, "/api/v1/models/files/{sha}", {**dev, "Range": f"bytes={f['size']}-"})  # 416
    call("GET", f"/api/v1/models/files/{'0' * 64}", "/api/v1/models/files/{sha}", dev)  # 404
    report = {
        "models": [{"name": current["bundles"][0]["name"], "sha256": f["sha256"], "signature_sha256": "a"}],
        "set_id": current["id"],
        "state": "installed",
        "detail": "",
    }
    check_request(SPEC, "/api/v1/models/installed", "POST", report)
    post_json("/api/v1/models/installed", "/api/v1/models/installed", report)
    post_json("/api/v1/models/installed", "/api/v1/models/installed", {"models": "x"})  # 422
    call("GET", "/api/v1/fleet", "/api/v1/fleet", usr)
    must = {
        ("/api/v1/images/{sha}", "PUT", 201),
        ("/api/v1/images/{sha}", "PUT", 200),
        ("/api/v1/images/{sha}", "PUT", 422),
        ("/api/v1/results", "POST", 200),
        ("/api/v1/results", "POST", 422),
        ("/api/v1/samples", "POST", 200),
        ("/api/v1/samples", "POST", 422),
        ("/api/v1/results/{rid}", "GET", 200),
        ("/api/v1/models/current", "GET", 200),
        ("/api/v1/models/files/{sha}", "GET", 416),
        ("/api/v1/models/installed", "POST", 200),
        ("/api/v1/fleet", "GET", 200),
    }
    assert must <= seen, must - seen
