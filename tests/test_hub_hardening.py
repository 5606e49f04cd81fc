"""Hub hardening (issue 13, hub side), on SQLite and PostgreSQL: a device writes only its own samples,
reviews and images and learns nothing about other devices' images; bounded JSON; doubtful capture times
stored but flagged; strings PostgreSQL cannot store refused (not a 500); CSV export defused; rate limits;
dashboard sessions that logout ends; security headers; internal errors that say nothing inside."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import re
import uuid
from pathlib import Path

import pytest
from hubkit import Hub, hub_db, pg_server  # noqa: F401 - fixtures
from test_hub_api import IMG, SHA, record, sample

from hub import tokens
from hub.app import HubSettings
from hub.models import User

NO_LIMITS = HubSettings(max_body_mb=1, max_batch=50, rate_limit="", auth_fail_limit="")
HUB_DIR = Path(__file__).resolve().parents[1] / "hub"


class Two:
    """A hub with two devices (A = scope-1, B = scope-2) and a reader."""

    def __init__(self, url: str, settings: HubSettings = NO_LIMITS) -> None:
        self.hub = Hub(url, settings)
        with self.hub.sessions() as s:
            self.b_token = tokens.add_device(s, "scope-2")
        self.c = self.hub.client()

    def a(self) -> dict[str, str]:
        return self.hub.dev()

    def b(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.b_token}"}

    def post(self, headers: dict[str, str], *records: dict) -> dict:
        r = self.c.post("/api/v1/results", json={"records": list(records)}, headers=headers)
        assert r.status_code in (200, 422), r.data
        return r.get_json()

    def login(self) -> None:
        assert self.c.post("/login", data={"token": self.hub.user_token}).status_code == 302


@pytest.fixture
def two(hub_db):  # noqa: F811
    return Two(hub_db)


def _statuses(answer: dict) -> list[tuple[str, str]]:
    return [(a["status"], a.get("reason") or "") for a in answer["results"]]


# --- item 2: ownership ----------------------------------------------------------------------------


def test_a_device_cannot_review_or_join_another_devices_slide(two):
    slide = str(uuid.uuid4())
    unsure = record(seq=1, sample_id=slide, label="Early", abstained=True, confidence=0.4)
    sure = [record(seq=i, sample_id=slide, label="Pre") for i in range(2, 5)]
    assert two.post(two.a(), unsure, *sure)["counts"]["accepted"] == 4
    two.login()
    before = two.c.get("/samples").get_data(as_text=True)
    assert "Pre 3" in before and "Early" in two.c.get("/review").get_data(as_text=True)

    # the probe: device B reviews A's uncertain field and adds "Benign" fields to A's slide
    review = record(seq=1, kind="review", source="review", review_of=unsure["id"], label="Benign")
    extra = [record(seq=i, sample_id=slide, label="Benign") for i in range(2, 8)]
    answer = two.post(two.b(), review, *extra)
    assert answer["counts"]["rejected"] == 7 and answer["counts"]["accepted"] == 0
    assert _statuses(answer)[0] == ("rejected", "review_of: a record of another device")
    assert all(s == ("rejected", "sample_id: a sample of another device") for s in _statuses(answer)[1:])
    assert two.c.get("/samples").get_data(as_text=True) == before  # "Pre 3, uncertain" unchanged
    assert "Early" in two.c.get("/review").get_data(as_text=True)  # still awaiting review

    # B cannot describe A's slide either (A has only sent records for it, no sample row yet)
    r = two.c.post(
        "/api/v1/samples", json={"samples": [sample(id=slide, slide_id="HIJACK")]}, headers=two.b()
    )
    assert r.status_code == 422 and "another device" in r.get_json()["results"][0]["reason"]
    assert "HIJACK" not in two.c.get("/samples").get_data(as_text=True)
    # A itself still can
    r = two.c.post("/api/v1/samples", json={"samples": [sample(id=slide)]}, headers=two.a())
    assert r.get_json()["results"][0]["status"] == "stored"


def test_a_review_waits_for_the_record_it_reviews(two):
    target = record(seq=1, abstained=True)
    review = record(seq=2, kind="review", source="review", review_of=target["id"], label="Pre")
    answer = two.post(two.a(), review)
    assert (
        answer["results"][0]["status"] == "deferred"
        and "not on the hub yet" in answer["results"][0]["reason"]
    )
    assert two.post(two.a(), target)["counts"]["accepted"] == 1
    assert two.post(two.a(), review)["counts"]["accepted"] == 1
    # the record and its review in one batch are fine too
    t2 = record(seq=3, abstained=True)
    r2 = record(seq=4, kind="review", source="review", review_of=t2["id"], label="Pre")
    assert two.post(two.a(), t2, r2)["counts"]["accepted"] == 2


def test_images_are_scoped_to_the_device_that_uploaded_them(two):
    c = two.c
    assert c.put(f"/api/v1/images/{SHA}", data=IMG, headers=two.a()).status_code == 201
    # B learns nothing: HEAD, /images/have and a record naming the image all answer as if it were absent
    assert c.head(f"/api/v1/images/{SHA}", headers=two.b()).status_code == 404
    r = c.post("/api/v1/images/have", json={"sha256": [SHA]}, headers=two.b())
    assert r.get_json() == {"have": [], "missing": [SHA]}
    answer = two.post(two.b(), record(image_sha256=SHA))
    assert answer["results"][0]["status"] == "deferred"
    # uploading the bytes proves B has them: "stored" for B (not "exists", which would tell)
    r = c.put(f"/api/v1/images/{SHA}", data=IMG, headers=two.b())
    assert r.status_code == 201 and r.get_json()["status"] == "stored"
    assert c.head(f"/api/v1/images/{SHA}", headers=two.b()).status_code == 200
    assert c.put(f"/api/v1/images/{SHA}", data=IMG, headers=two.a()).status_code == 200
    assert two.hub.stats()["images"] == 1  # one copy of the bytes, two owners
    from hub.models import ImageDevice

    with two.hub.sessions() as s:
        assert s.query(ImageDevice).count() == 2


def test_only_jpeg_bytes_are_stored(two):
    html = b"<html><script>alert(1)</script></html>"
    sha = hashlib.sha256(html).hexdigest()
    r = two.c.put(f"/api/v1/images/{sha}", data=html, headers=two.a())
    assert r.status_code == 422 and "JPEG" in r.get_json()["reason"]
    assert two.hub.stats()["images"] == 0


# --- item 8: input --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/v1/results", "/api/v1/samples", "/api/v1/images/have"])
def test_deeply_nested_json_is_400(two, path):
    for depth in (40, 100_000):
        body = b'{"records": ' + b"[" * depth + b"]" * depth + b"}"
        r = two.c.post(path, data=body, headers=two.a())
        assert r.status_code == 400 and "deeper" in r.get_json()["reason"], (depth, r.data[:200])
    zipped = gzip.compress(b"[" * 50_000)
    r = two.c.post(path, data=zipped, headers={**two.a(), "Content-Encoding": "gzip"})
    assert r.status_code == 400
    ok = two.c.post(path, json={"records": [], "samples": [], "sha256": []}, headers=two.a())
    assert ok.status_code == 200


def test_non_strict_json_is_422_not_500(two):
    for body in (b'{"records": [NaN]}', b'{"records": [' + b"1" * 5000 + b"]}", b'{"records": Infinity}'):
        r = two.c.post("/api/v1/results", data=body, headers=two.a())
        assert r.status_code == 422 and "JSON" in r.get_json()["reason"]


def test_implausible_capture_times_are_stored_but_flagged(two):
    now = record()
    year1 = record(captured_at="0001-01-01T00:00:00Z")
    epoch = record(captured_at="1970-01-01T00:00:05Z")
    future = record(captured_at="9999-12-31T23:59:59Z")
    answer = two.post(two.a(), now, year1, epoch, future)
    assert answer["counts"]["accepted"] == 4

    def hub_view(rec):
        return two.c.get(f"/api/v1/results/{rec['id']}", headers=two.hub.usr()).get_json()["hub"]

    assert hub_view(now)["time_flag"] is None and hub_view(now)["skew_flag"] is False
    for rec in (year1, epoch):
        v = hub_view(rec)
        assert v["skew_flag"] is True and "before 2024-01-01" in v["time_flag"]
    assert "future" in hub_view(future)["time_flag"]
    # an offset that puts year 1 before year 1 in UTC cannot be stored: refused with the reason
    bad = two.post(two.a(), record(captured_at="0001-01-01T00:00:00+05:00"))
    assert bad["results"][0]["status"] == "rejected" and "captured_at" in bad["results"][0]["reason"]
    two.login()
    rows = list(csv.DictReader(io.StringIO(two.c.get("/export/results.csv").get_data(as_text=True))))
    flags = {row["id"]: row["time_flag"] for row in rows}
    assert flags[now["id"]] == "" and "before 2024" in flags[epoch["id"]]
    page = two.c.get("/").get_data(as_text=True)
    assert re.search(r'class="warn">3<', page)  # three records flagged for scope-1


def test_values_postgresql_cannot_store_are_refused_not_500(two):
    bad = [
        record(label="Pre\x00"),
        record(captured_at="2026-11-22T01:02:03.123456+05:30:00.123456"),  # 42 characters
        record(label="Pre\u202eerp"),  # right-to-left override
    ]
    answer = two.post(two.a(), *bad)
    assert [s for s, _ in _statuses(answer)] == ["rejected"] * 3
    r = two.c.post(
        "/api/v1/samples",
        json={"samples": [sample(created_by="x" * 300), sample(slide_id="A\x00"), sample(notes="\x00")]},
        headers=two.a(),
    )
    assert r.status_code == 422 and all(a["status"] == "rejected" for a in r.get_json()["results"])
    usr = two.hub.usr()
    assert two.c.get("/api/v1/results?device=a%00b", headers=usr).status_code == 400
    assert two.c.get("/api/v1/results/%00", headers=usr).status_code == 404
    assert two.c.get(f"/api/v1/results?offset={10**30}", headers=usr).status_code == 200


# --- item 7: CSV ----------------------------------------------------------------------------------


def test_csv_export_defuses_formulas(two):
    recs = [
        record(seq=1, label='=HYPERLINK("http://evil","x")', reason="@SUM(A1)"),
        record(seq=2, label="+cmd|' /C calc'!A0", reason=" \t=1+1"),
        record(seq=3, label="-2+3", reason="\r\n@x"),
        record(seq=4, label="Pre", reason="plain"),
    ]
    assert two.post(two.a(), *recs)["counts"]["accepted"] == 4
    two.login()
    text = two.c.get("/export/results.csv").get_data(as_text=True)
    rows = {row["seq"]: row for row in csv.DictReader(io.StringIO(text))}
    for seq in ("1", "2", "3"):
        for col in ("label", "reason"):
            assert rows[seq][col].startswith("'"), (seq, col, rows[seq][col])
    assert rows["4"]["label"] == "Pre" and rows["4"]["reason"] == "plain"


def test_every_csv_the_hub_writes_goes_through_the_safe_writer():
    """A CSV writer added later (e.g. a dataset export) must use common.csvsafe too."""
    offenders = []
    for path in HUB_DIR.rglob("*.py"):
        text = path.read_text()
        if re.search(r"csv\.(writer|DictWriter)\(", text):
            offenders.append(str(path.relative_to(HUB_DIR)))
    assert offenders == [], f"use common.csvsafe.writer instead of csv.writer in {offenders}"


# --- beyond the list ------------------------------------------------------------------------------


def test_dashboard_escapes_device_text(two):
    xss = "<script>alert(1)</script>"
    slide = str(uuid.uuid4())
    two.post(two.a(), record(sample_id=slide, label=xss, abstained=True, reason=xss))
    r = two.c.post(
        "/api/v1/samples",
        json={
            "samples": [
                sample(id=slide, slide_id=xss, status="finished", summary={"call_text": xss, "rule": xss})
            ]
        },
        headers=two.a(),
    )
    assert r.status_code == 200
    two.login()
    for page in ("/samples", "/review", "/"):
        resp = two.c.get(page)
        body = resp.get_data(as_text=True)
        assert "<script>alert" not in body and (page == "/" or "&lt;script&gt;" in body)
        assert "script-src" not in resp.headers["Content-Security-Policy"]  # no script may run at all
        assert resp.headers["X-Content-Type-Options"] == "nosniff"


def test_logout_and_a_new_token_end_dashboard_sessions(two):
    two.login()
    assert two.c.get("/").status_code == 200
    stolen = two.c.get_cookie("session").value
    two.c.post("/logout")
    two.c.set_cookie("session", stolen)  # the old cookie, replayed after logout
    assert two.c.get("/").status_code == 302
    two.login()
    assert two.c.get("/").status_code == 200
    with two.hub.sessions() as s:
        tokens.rotate(s, User, "reader")
    assert two.c.get("/").status_code == 302


def test_rate_limits(hub_db):  # noqa: F811
    two = Two(hub_db, HubSettings(rate_limit="8/minute", auth_fail_limit="5/minute"))
    guesser = {"REMOTE_ADDR": "10.0.0.9"}
    bad = {"Authorization": "Bearer not-a-token"}
    codes = [two.c.get("/api/v1/ping", headers=bad, environ_base=guesser).status_code for _ in range(7)]
    assert codes == [401] * 5 + [429] * 2  # token guessing slowed down...
    r = two.c.post("/login", data={"token": "guess"}, environ_base=guesser)
    assert r.status_code == 429 and r.headers.get("Retry-After")
    r = two.c.get("/api/v1/ping", headers=bad, environ_base=guesser)
    assert r.status_code == 429 and r.is_json
    # ...without touching devices elsewhere; each token has its own request budget
    codes = [two.c.get("/api/v1/ping", headers=two.a()).status_code for _ in range(10)]
    assert codes == [200] * 8 + [429] * 2
    assert two.c.get("/api/v1/ping", headers=two.b()).status_code == 200  # B has its own budget
    assert two.c.get("/healthz").status_code == 200  # exempt


def test_internal_errors_say_nothing_inside(two, monkeypatch):
    import hub.api

    def boom(*_a, **_k):
        raise RuntimeError("SELECT secret FROM /srv/hub/internal.py")

    monkeypatch.setattr(hub.api, "_have", boom)
    r = two.c.post("/api/v1/images/have", json={"sha256": [SHA]}, headers=two.a())
    assert r.status_code == 500 and r.is_json
    assert "secret" not in r.get_data(as_text=True) and "reference" in r.get_json()["reason"]


def test_an_oversized_token_is_a_plain_401(two):
    r = two.c.get("/api/v1/ping", headers={"Authorization": "Bearer " + "x" * 100_000})
    assert r.status_code == 401


def test_login_redirects_only_to_the_hub_itself(two):
    for evil in ("/\\evil.example", "//evil.example", "/\t/evil.example", "https://evil.example"):
        c = two.hub.client()
        r = c.post("/login", query_string={"next": evil}, data={"token": two.hub.user_token})
        assert r.status_code == 302 and r.headers["Location"] == "/", evil
    r = two.hub.client().post("/login?next=/samples", data={"token": two.hub.user_token})
    assert r.headers["Location"] == "/samples"


def test_waitress_buffers_no_more_than_the_body_limit():
    from hub.cli import waitress_options

    opts = waitress_options(HubSettings(max_body_mb=16), host="127.0.0.1", port=0, threads=4)
    assert 16 * 2**20 <= opts["max_request_body_size"] < 17 * 2**20  # waitress's default is 1 GB
    assert opts["channel_timeout"] <= 60
    assert opts["clear_untrusted_proxy_headers"] is True  # no proxy: a client cannot choose its address
    opts = waitress_options(HubSettings(proxy_hops=1), host="127.0.0.1", port=0, threads=4)
    assert opts["clear_untrusted_proxy_headers"] is False  # the proxy's X-Forwarded-For reaches ProxyFix


def test_a_forged_forwarded_address_is_not_a_500(hub_db):  # noqa: F811
    """With --proxy-hops the client address comes from X-Forwarded-For; a long one (a hub exposed
    without its proxy) must not overflow the 100-character last_address column on PostgreSQL."""
    two = Two(hub_db, HubSettings(proxy_hops=1, rate_limit="", auth_fail_limit=""))
    r = two.c.get("/api/v1/ping", headers={**two.a(), "X-Forwarded-For": "9" * 300})
    assert r.status_code == 200
    assert two.post(two.a(), record(image_sha256="a" * 64 + "\n"))["results"][0]["status"] == "rejected"


def test_upgrade_keeps_each_device_owning_the_images_it_sent(hub_db):  # noqa: F811
    """A hub from before image ownership: after `migrate`, the device that uploaded an image still sees it
    (no needless re-upload), and another device does not."""
    from datetime import UTC, datetime

    from alembic import command
    from sqlalchemy import text

    from hub import db as hubdb

    engine = hubdb.make_engine(hub_db)
    cfg = hubdb.alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0002")
    now = datetime.now(UTC)
    with engine.begin() as conn:
        for i, name in enumerate(("scope-1", "scope-2"), 1):
            conn.execute(
                text(
                    "INSERT INTO devices (id, name, token_hash, created_at, disabled) "
                    "VALUES (:i, :n, :h, :t, false)"
                ),
                {"i": i, "n": name, "h": tokens.token_hash(f"tok-{name}"), "t": now},
            )
        conn.execute(
            text(
                "INSERT INTO images (sha256, size, data, device_id, received_at) VALUES (:s, :z, :d, 1, :t)"
            ),
            {"s": SHA, "z": len(IMG), "d": IMG, "t": now},
        )
    engine.dispose()
    from hub.app import create_app

    app = create_app(hub_db, settings=NO_LIMITS)  # migrates the old database
    c = app.test_client()
    assert c.head(f"/api/v1/images/{SHA}", headers={"Authorization": "Bearer tok-scope-1"}).status_code == 200
    assert c.head(f"/api/v1/images/{SHA}", headers={"Authorization": "Bearer tok-scope-2"}).status_code == 404


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class _Trickle:
    """A request body that sends one byte per read while 20 s pass (the clock is fake)."""

    def __init__(self, clock: _Clock, stall: bool = False) -> None:
        self.clock, self.stall = clock, stall

    def read(self, *_a) -> bytes:
        if self.stall:
            raise TimeoutError("timed out")  # what the socket timeout raises
        self.clock.t += 20.0
        return b" "

    def readline(self, *_a) -> bytes:
        return self.read()


def test_a_stalled_or_trickling_body_frees_the_worker_with_408(two):
    """gunicorn reads bodies in its worker threads: 4 stalled uploads froze a 2x2 hub (measured by
    benchmarks/abuse_hub.py --db postgres). With BodyDeadline a slow body ends in 408 and the thread is
    free. The clock here is fake: nothing waits."""
    from werkzeug.test import EnvironBuilder

    from hub.gunicorn_app import _HubApplication
    from hub.slowclient import BodyDeadline

    for stall in (False, True):
        clock = _Clock()
        wrapped = BodyDeadline(two.hub.app, 60.0, clock=clock)
        env = EnvironBuilder(
            path="/api/v1/results",
            method="POST",
            headers={**two.a(), "Content-Type": "application/json"},
        ).get_environ()
        env["wsgi.input"], env["CONTENT_LENGTH"] = _Trickle(clock, stall), "100000"
        out: dict = {}

        def start_response(status, headers, *_, out=out):
            out.update(status=status, headers=headers)

        body = b"".join(wrapped(env, start_response))
        assert out["status"].startswith("408"), (stall, out["status"], body[:200])
        assert ("Connection", "close") in out["headers"]
        assert clock.t <= 80.0  # stopped reading at the deadline (60 s), not after 100,000 bytes
    loaded = _HubApplication(
        two.hub.sessions.kw["bind"].url.render_as_string(hide_password=False), NO_LIMITS, {}
    )
    assert isinstance(loaded.load(), BodyDeadline)


def test_the_dashboard_ignores_cross_device_reviews_stored_before_the_check(two):
    """Rows a hostile device got in before ownership was enforced must not change what people see."""
    from datetime import UTC, datetime

    from sqlalchemy import select

    from hub.models import Device, Result

    slide = str(uuid.uuid4())
    unsure = record(seq=1, sample_id=slide, label="Early", abstained=True, confidence=0.4)
    two.post(two.a(), unsure, *[record(seq=i, sample_id=slide, label="Pre") for i in range(2, 5)])
    two.login()
    before = two.c.get("/samples").get_data(as_text=True)
    with two.hub.sessions() as s:  # what the old hub accepted from device B
        b = s.scalar(select(Device.id).where(Device.name == "scope-2"))
        for i, (kind, review_of) in enumerate([("review", unsure["id"])] + [("classification", None)] * 5):
            s.add(
                Result(
                    id=str(uuid.uuid4()), device_id=b, seq=i, sample_id=slide,
                    captured_at=unsure["captured_at"], received_at=datetime.now(UTC), source="camera",
                    kind=kind, review_of=review_of, label="Benign", confidence=0.99, abstained=False,
                    record_json="{}",
                )
            )  # fmt: skip
        s.commit()
    assert two.c.get("/samples").get_data(as_text=True) == before
    assert "Early" in two.c.get("/review").get_data(as_text=True)  # still awaiting a real review


def test_the_session_cookie_is_secure_over_https(hub_db):  # noqa: F811
    two = Two(hub_db, HubSettings(proxy_hops=1, rate_limit="", auth_fail_limit=""))
    plain = two.c.post("/login", data={"token": two.hub.user_token})
    assert "Secure" not in plain.headers["Set-Cookie"] and "HttpOnly" in plain.headers["Set-Cookie"]
    behind_tls = two.hub.client().post(
        "/login", data={"token": two.hub.user_token}, headers={"X-Forwarded-Proto": "https"}
    )
    assert "Secure" in behind_tls.headers["Set-Cookie"]
