"""Every hub route (taken from `app.url_map`, so a route added later is walked too), every method, as a
hostile second device, with no token, with a garbage token and with a reader's token: device A's records,
samples and images must come out unchanged, and nobody but a reader may learn anything about them.
Image existence gets a stricter check: a device's answer must not depend on whether another device
uploaded an image (it is compared with the answer for a hash nobody uploaded)."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from typing import Any

import pytest
from hubkit import Hub, hub_db, jpeg, pg_server  # noqa: F401 - fixtures
from sqlalchemy import or_, select
from test_hub_api import record, sample

from hub import tokens
from hub.app import HubSettings
from hub.models import Image, ImageDevice, Result, Sample

SLIDE_SECRET = "SLIDE-A-SECRET-7f3a"
LABEL_SECRET = "LabelASecret"
VOLATILE = {"time", "received_at", "clock_skew_s"}


class Scene:
    """Device A with an image, a slide (records + sample row) and an uncertain field; device B hostile."""

    def __init__(self, url: str) -> None:
        import numpy as np

        self.hub = Hub(url, HubSettings(max_body_mb=1, max_batch=50, rate_limit="", auth_fail_limit=""))
        self.app = self.hub.app
        with self.hub.sessions() as s:
            self.b_token = tokens.add_device(s, "scope-2")
        c = self.hub.client()
        self.img = jpeg(np.random.default_rng(7), 24)
        self.sha = hashlib.sha256(self.img).hexdigest()
        assert c.put(f"/api/v1/images/{self.sha}", data=self.img, headers=self.hub.dev()).status_code == 201
        self.slide = str(uuid.uuid4())
        self.rec = record(
            seq=1, sample_id=self.slide, label=LABEL_SECRET, abstained=True, image_sha256=self.sha
        )
        r = c.post("/api/v1/results", json={"records": [self.rec]}, headers=self.hub.dev())
        assert r.get_json()["counts"]["accepted"] == 1
        r = c.post(
            "/api/v1/samples",
            json={"samples": [sample(id=self.slide, slide_id=SLIDE_SECRET)]},
            headers=self.hub.dev(),
        )
        assert r.status_code == 200

    def snapshot(self) -> Any:
        """Everything about device A's data, and anything of another device that points at it."""
        ids = {self.rec["id"]}
        with self.hub.sessions() as s:
            a = s.scalar(select(Result.device_id).where(Result.id == self.rec["id"]))
            results = sorted(
                (r.id, r.device_id, r.label, r.sample_id, r.review_of, r.record_json)
                for r in s.scalars(
                    select(Result).where(
                        or_(Result.device_id == a, Result.review_of.in_(ids), Result.sample_id == self.slide)
                    )
                )
            )
            samples = sorted(
                (x.id, x.device_id, x.slide_id, x.status, x.summary_json)
                for x in s.scalars(select(Sample).where(or_(Sample.device_id == a, Sample.id == self.slide)))
            )
            owners = sorted(s.execute(select(ImageDevice.sha256, ImageDevice.device_id)).all())
            data = s.scalar(select(Image.data).where(Image.sha256 == self.sha))
        return results, samples, owners, hashlib.sha256(bytes(data)).hexdigest()

    def hostile_body(self, sha: str) -> dict[str, Any]:
        """One JSON body that attacks A through every field a route might read."""
        review = record(seq=90, kind="review", source="review", review_of=self.rec["id"], label="Benign")
        joined = record(seq=91, sample_id=self.slide, label="Benign")
        stolen_id = record(seq=92, id=self.rec["id"], label="Benign")
        names_image = record(seq=93, image_sha256=sha)
        return {
            "records": [review, joined, stolen_id, names_image],
            "samples": [sample(id=self.slide, slide_id="HIJACK", status="finished")],
            "sha256": [sha],
            "token": self.b_token,
        }


def _url(rule: Any, scene: Scene, sha: str) -> str:
    values = {}
    for arg in rule.arguments:
        if "sha" in arg:
            values[arg] = sha
        elif arg == "filename":
            values[arg] = "hub.css"
        elif "sample" in arg or "slide" in arg:
            values[arg] = scene.slide
        else:
            values[arg] = scene.rec["id"]  # rid, id, anything new: A's record id is the juiciest
    with scene.app.test_request_context():
        from flask import url_for

        return url_for(rule.endpoint, **values)


def _call(scene: Scene, method: str, url: str, headers: dict[str, str], sha: str) -> tuple[int, bytes]:
    c = scene.hub.client()
    kw: dict[str, Any] = {"headers": headers}
    if method in ("POST", "PUT", "PATCH", "DELETE"):
        if method == "PUT" and "images" in url:
            kw["data"] = b"\xff\xd8 not the bytes of " + sha.encode()
        elif url.endswith("/login"):
            kw["data"] = {"token": scene.hub.device_token}  # a device token is not a login
        else:
            kw["json"] = scene.hostile_body(sha)
    r = c.open(url, method=method, **kw)
    return r.status_code, r.data


def _normalized(status: int, body: bytes, sha: str) -> Any:
    text = re.sub(r"[0-9a-f]{64}", "<HEX>", body.decode("utf-8", "replace").replace(sha, "<SHA>"))
    text = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<UUID>", text)
    try:
        value = json.loads(text)
    except ValueError:
        return status, text
    if isinstance(value, dict):
        value = {k: v for k, v in value.items() if k not in VOLATILE}
    return status, value


def _routes(app: Any) -> list[tuple[Any, str]]:
    out = []
    for rule in app.url_map.iter_rules():
        for method in sorted(rule.methods - {"OPTIONS"}):
            out.append((rule, method))
    return out


@pytest.fixture
def scene(hub_db):  # noqa: F811
    return Scene(hub_db)


def test_every_route_as_the_wrong_device_no_token_and_a_reader(scene):
    before = scene.snapshot()
    fresh = hashlib.sha256(b"nobody uploaded this " + uuid.uuid4().bytes).hexdigest()
    principals = {
        "none": {},
        "garbage": {"Authorization": "Bearer " + "x" * 43},
        "device-b": {"Authorization": f"Bearer {scene.b_token}"},
        "reader": scene.hub.usr(),
    }
    secrets = [SLIDE_SECRET.encode(), LABEL_SECRET.encode(), scene.img]
    walked = 0
    for rule, method in _routes(scene.app):
        for who, headers in principals.items():
            url = _url(rule, scene, scene.sha)
            status, body = _call(scene, method, url, headers, scene.sha)
            walked += 1
            where = f"{method} {rule.rule} as {who}: {status} {body[:200]!r}"
            if status >= 500:
                pytest.fail(f"server error: {where}")
            if who == "reader":
                continue  # a person may read everything; writes are checked by the snapshot below
            for secret in secrets:
                assert secret not in body, f"leak of A's data: {where}"
            if "id" in rule.arguments or "rid" in rule.arguments:
                # a login redirect names the path the caller asked for (`next`): the caller's own words
                told = body.replace(f"next={url}".encode(), b"")
                assert scene.rec["id"].encode() not in told, f"leak of A's record: {where}"
            # image existence: the answer must be the same as for a hash nobody uploaded
            other = _call(scene, method, _url(rule, scene, fresh), headers, fresh)
            differs = f"the answer depends on whether another device has the image: {where} vs {other!r:.200}"
            assert _normalized(status, body, scene.sha) == _normalized(*other, fresh), differs
    assert walked >= 4 * 15  # every route was walked (sanity: the hub has at least 15 route/methods)
    assert scene.snapshot() == before, "device A's records, samples or images were changed"

    # and what people see of A's slide is unchanged
    c = scene.hub.client()
    c.post("/login", data={"token": scene.hub.user_token})
    page = c.get("/samples").get_data(as_text=True)
    assert SLIDE_SECRET in page and "HIJACK" not in page and "Benign" not in page
    assert LABEL_SECRET in c.get("/review").get_data(as_text=True)  # still awaiting review


def test_every_route_with_hostile_path_values_is_never_a_500(scene):
    """NUL (PostgreSQL cannot compare it: a 500), very long, traversal and non-ASCII path values, as a
    logged-in person (cookie), a reader's token and a device's token."""
    from urllib.parse import quote

    hostile = ["\x00", "x" * 5000, "../../etc/passwd", "%", "ü" * 64, "0" * 64 + "\x00"]
    person = scene.hub.client()
    assert person.post("/login", data={"token": scene.hub.user_token}).status_code == 302
    callers = [(person, {}), (scene.hub.client(), scene.hub.usr()), (scene.hub.client(), scene.hub.dev())]
    for rule, method in _routes(scene.app):
        if not rule.arguments or rule.endpoint == "dashboard.logout":
            continue
        for value in hostile:
            path = rule.rule
            for arg in rule.arguments:
                path = re.sub(rf"<(?:[a-z]+:)?{arg}>", quote(value, safe=""), path)
            for client, headers in callers:
                r = client.open(path, method=method, headers=headers)
                assert r.status_code < 500, f"{method} {path[:80]}: {r.status_code} {r.data[:200]!r}"
