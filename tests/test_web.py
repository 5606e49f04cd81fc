"""The technician's page through Flask's test client: login, CSRF, roles, pages, API, exports."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest
from webkit import PASSWORD, csrf_of, login, make_app, smear, token_of

from common.wording import DISCLAIMER
from device.web import auth

PAGES = [
    "/", "/samples", "/history", "/upload", "/models", "/status", "/account", "/admin/users",
    "/admin/settings", "/live/events", "/live/stream.mjpg", "/live/heatmap.jpg", "/export.csv",
]  # fmt: skip
APIS = [
    "/api/v1/results",
    "/api/v1/samples",
    "/api/v1/status",
    "/api/v1/live",
    "/api/v1/export",
    "/api/status",
]


@pytest.mark.parametrize("path", PAGES)
def test_pages_need_login(app_svc, path):
    r = app_svc[0].test_client().get(path)
    assert r.status_code == 302 and "/login" in r.headers["Location"]


@pytest.mark.parametrize("path", APIS + ["/metrics"])
def test_api_needs_login(app_svc, path):
    r = app_svc[0].test_client().get(path)
    assert r.status_code == 401
    assert "error" in r.get_json()


def test_healthz_is_open(app_svc):
    r = app_svc[0].test_client().get("/healthz")
    assert r.status_code == 200 and r.get_json() == {"ok": True, "storage": "ok"}


def test_every_page_says_not_a_diagnosis(client):
    for path in ["/", "/samples", "/history", "/upload", "/models", "/status", "/account", "/login"]:
        html = client.get(path).get_data(as_text=True)
        assert DISCLAIMER in html, path


def test_login_sets_httponly_samesite_cookie(app_svc):
    c = app_svc[0].test_client()
    token = csrf_of(c)
    r = c.post("/login", data={"username": "tech", "password": PASSWORD, "csrf_token": token})
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_wrong_password_then_rate_limited(app_svc):
    c = app_svc[0].test_client()
    token = csrf_of(c)
    for _ in range(5):
        r = c.post("/login", data={"username": "tech", "password": "nope-nope", "csrf_token": token})
        assert r.status_code == 401
    r = c.post("/login", data={"username": "tech", "password": PASSWORD, "csrf_token": token})
    assert r.status_code == 429 and "Too many failed logins" in r.get_data(as_text=True)
    assert "Retry-After" in r.headers


def test_login_needs_csrf(app_svc):
    c = app_svc[0].test_client()
    csrf_of(c)
    r = c.post("/login", data={"username": "tech", "password": PASSWORD})
    assert r.status_code == 400


def test_open_redirect_refused(app_svc):
    c = app_svc[0].test_client()
    token = csrf_of(c)
    r = c.post(
        "/login?next=//evil.example/x", data={"username": "tech", "password": PASSWORD, "csrf_token": token}
    )
    assert r.headers["Location"] == "/"


def test_csrf_enforced_on_forms_and_api(client):
    assert client.post("/samples", data={"slide_id": "S1"}).status_code == 400
    assert client.post("/samples", data={"slide_id": "S1", "csrf_token": "wrong"}).status_code == 400
    assert client.post("/api/v1/samples", json={"slide_id": "S1"}).status_code == 400
    r = client.post("/api/v1/samples", json={"slide_id": "S1"}, headers={"X-CSRF-Token": token_of(client)})
    assert r.status_code == 201
    r = client.post("/samples", data={"slide_id": "S2", "csrf_token": token_of(client)})
    assert r.status_code == 302


def test_api_key_auth_exempt_from_csrf(app_svc):
    app, svc = app_svc
    key = auth.new_api_key(svc.store.conn, "tech")
    c = app.test_client()
    r = c.post("/api/v1/samples", json={"slide_id": "K1"}, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 201 and r.get_json()["created_by"] == "tech"
    r = c.get("/api/v1/samples", headers={"Authorization": "Bearer ssk_wrong"})
    assert r.status_code == 401
    auth.revoke_api_keys(svc.store.conn, "tech")
    assert c.get("/api/v1/samples", headers={"Authorization": f"Bearer {key}"}).status_code == 401


def test_roles(app_svc):
    app, _ = app_svc
    tech = app.test_client()
    login(tech)
    for path in ("/admin/users", "/admin/settings"):
        assert tech.get(path).status_code == 403
    r = tech.post(
        "/admin/users",
        data={
            "action": "add",
            "name": "x",
            "role": "admin",
            "password": "12345678",
            "csrf_token": token_of(tech),
        },
    )
    assert r.status_code == 403
    assert "Admin" not in tech.get("/").get_data(as_text=True).split("<main>")[0]
    admin = app.test_client()
    login(admin, "admin")
    assert admin.get("/admin/users").status_code == 200
    settings = admin.get("/admin/settings").get_data(as_text=True)
    assert "[web]" in settings and "secret_key" in settings


def test_admin_manages_users_and_keeps_an_admin(app_svc):
    app, svc = app_svc
    admin = app.test_client()
    login(admin, "admin")
    tok = token_of(admin)
    form = {"action": "add", "name": "eve", "role": "technician", "password": "pw-long-1", "csrf_token": tok}
    r = admin.post("/admin/users", data=form)
    assert r.status_code == 302 and auth.get_user(svc.store.conn, "eve").role == "technician"
    r = admin.post("/admin/users", data={"action": "apikey", "name": "eve", "csrf_token": tok})
    key = re.search(r'<pre id="new-key">([^<]+)</pre>', r.get_data(as_text=True)).group(1)
    assert auth.verify_api_key(svc.store.conn, key).name == "eve"
    r = admin.post("/admin/users", data={"action": "remove", "name": "admin", "csrf_token": tok})
    assert r.status_code == 400 and "last admin" in r.get_data(as_text=True)
    r = admin.post("/admin/users", data={"action": "remove", "name": "eve", "csrf_token": tok})
    assert r.status_code == 302 and auth.get_user(svc.store.conn, "eve") is None


def test_password_change_logs_out_other_sessions(app_svc):
    app, svc = app_svc
    a, b = app.test_client(), app.test_client()
    login(a)
    login(b)
    r = a.post("/account", data={"current": PASSWORD, "new": "another-pass-2", "repeat": "another-pass-2",
                                 "csrf_token": token_of(a)})  # fmt: skip
    assert r.status_code == 302
    assert a.get("/samples").status_code == 200
    assert b.get("/samples").status_code == 302  # the other browser is logged out


def test_disabled_user_is_logged_out(app_svc):
    app, svc = app_svc
    c = app.test_client()
    login(c)
    auth.set_disabled(svc.store.conn, "tech", True)
    assert c.get("/samples").status_code == 302
    assert login(c).status_code == 401


def test_open_live_view(tmp_path):
    app, svc = make_app(tmp_path, open_live_view=True)
    c = app.test_client()
    html = c.get("/").get_data(as_text=True)
    assert 'data-readonly="1"' in html and "Capture field" not in html
    assert c.get("/history").status_code == 302
    assert c.post("/api/v1/capture", json={}).status_code == 401


def test_sample_capture_summary_finish(client, app_svc):
    _, svc = app_svc
    tok = token_of(client)
    sample = client.post("/api/v1/samples", json={"slide_id": "LAB-1", "notes": "n"},
                         headers={"X-CSRF-Token": tok}).get_json()  # fmt: skip
    r = client.post("/api/v1/capture", json={}, headers={"X-CSRF-Token": tok})
    assert r.status_code == 409  # no live frame yet
    svc.push_frame(smear(1))
    for _ in range(3):
        r = client.post("/api/v1/capture", json={"sample": sample["id"]}, headers={"X-CSRF-Token": tok})
        assert r.status_code == 201
    body = r.get_json()
    assert body["summary"]["fields"] == 3 and body["record"]["sample_id"] == sample["id"]
    live = client.get("/").get_data(as_text=True)
    assert "LAB-1" in live
    page = client.get(f"/samples/{sample['id']}").get_data(as_text=True)
    assert "3 fields" in page and page.count('class="thumb"') == 3
    r = client.post(f"/samples/{sample['id']}/finish", data={"csrf_token": tok})
    assert r.status_code == 200 and "Finish sample LAB-1?" in r.get_data(as_text=True)  # asks first
    assert svc.store.get_sample(sample["id"])["status"] == "open"
    r = client.post(f"/samples/{sample['id']}/finish", data={"csrf_token": tok, "confirm": "yes"})
    assert r.status_code == 302
    assert svc.store.get_sample(sample["id"])["status"] == "finished"
    r = client.post("/api/v1/capture", json={"sample": sample["id"]}, headers={"X-CSRF-Token": tok})
    assert r.status_code == 409


def _seed(svc, n: int, sample_id=None) -> list[dict]:
    return [svc.capture_field(sample_id, "tech") for _ in range(n)]


def test_history_filters_pagination_detail_review_export(client, app_svc):
    _, svc = app_svc
    tok = token_of(client)
    s = svc.store.open_sample("SLIDE-9", "", "tech")
    svc.push_frame(smear(2))
    recs = _seed(svc, 60, s["id"])
    html = client.get("/history").get_data(as_text=True)
    assert html.count('class="thumb"') == 50 and "Older" in html
    nxt = re.search(r'href="(/history\?[^"]*before=\d+[^"]*)"', html).group(1).replace("&amp;", "&")
    assert client.get(nxt).get_data(as_text=True).count('class="thumb"') == 10
    assert client.get("/history?from=2026-13-01").status_code == 400
    assert client.get("/history?uncertain=maybe").status_code == 400
    label = recs[0]["label"]
    assert client.get(f"/history?label={label}&sample={s['id']}").status_code == 200

    target = recs[5]
    detail = client.get(f"/results/{target['id']}").get_data(as_text=True)
    assert "Probabilities" in detail and "fake" in detail
    form = {"verdict": "correct", "label": "Benign", "comment": "looks benign", "csrf_token": tok}
    r = client.post(f"/results/{target['id']}/review", data=form)
    assert r.status_code == 302
    reviews = svc.store.reviews_of(target["id"])
    assert len(reviews) == 1 and reviews[0]["label"] == "Benign" and reviews[0]["review_of"] == target["id"]
    assert svc.store.get_result(target["id"])["label"] == target["label"]  # original unchanged
    reviewed = client.get("/api/v1/results?reviewed=yes").get_json()["results"]
    assert [r["id"] for r in reviewed] == [target["id"]]

    r = client.get(f"/export.csv?sample={s['id']}")
    assert r.status_code == 200 and r.mimetype == "text/csv"
    rows = list(csv.reader(io.StringIO(r.get_data(as_text=True))))
    assert rows[0][:3] == ["id", "seq", "captured_at"] and len(rows) == 1 + 61  # 60 fields + 1 review
    assert rows[0][-1] == "disclaimer" and "not a diagnosis" in rows[1][-1]
    assert rows[1][4] == "SLIDE-9"
    r = client.get(f"/api/v1/export?format=json&sample={s['id']}")
    data = json.loads(r.get_data(as_text=True))
    assert len(data["records"]) == 61 and data["sample"]["slide_id"] == "SLIDE-9"
    assert client.get("/export.xml").status_code == 400


def test_review_of_unknown_record(client):
    r = client.post("/results/nope/review", data={"verdict": "agree", "csrf_token": token_of(client)})
    assert r.status_code == 404
    assert client.get("/results/nope").status_code == 404


def test_images_and_thumbnails(client, app_svc):
    _, svc = app_svc
    svc.push_frame(smear(3, size=640))
    rec = svc.capture_field(None, "tech")
    sha = rec["image_sha256"]
    full = client.get(f"/image/{sha}.jpg")
    thumb = client.get(f"/image/{sha}/thumb.jpg")
    assert full.status_code == 200 and thumb.status_code == 200
    assert len(thumb.data) < len(full.data) / 3
    assert "immutable" in thumb.headers["Cache-Control"]
    assert client.get("/image/../../etc/passwd.jpg").status_code == 404
    assert client.get("/image/" + "a" * 64 + ".jpg").status_code == 404


def test_live_event_stream_and_mjpeg(app_svc):
    from device.web.live import mjpeg_frames, sse_events

    _, svc = app_svc
    svc.push_frame(smear(4), label="Pre")
    events = list(sse_events(svc.live, -1, max_s=0.3, keepalive_s=0.1))
    assert events[0].startswith("retry:")
    data = json.loads(events[1].split("data: ", 1)[1])
    assert data["label"] == "Pre" and set(data["probabilities"]) == {"Benign", "Early", "Pre", "Pro"}
    parts = mjpeg_frames(svc.live, fps=50, heatmap=False, stop_after_s=0.2)
    first = next(parts)
    assert first.startswith(b"--frame\r\nContent-Type: image/jpeg") and b"\xff\xd8" in first


def test_stream_routes_answer(client, app_svc):
    _, svc = app_svc
    svc.push_frame(smear(5))
    r = client.get("/live/stream.mjpg", buffered=False)
    assert r.mimetype == "multipart/x-mixed-replace"
    assert next(iter(r.response)).startswith(b"--frame")
    r.close()
    r = client.get("/live/events", buffered=False)
    assert r.mimetype == "text/event-stream"
    chunks = iter(r.response)
    assert next(chunks).startswith(b"retry")
    assert b"event: result" in next(chunks)
    r.close()
    r = client.get("/live/heatmap.jpg")
    assert r.status_code == 404  # the fake has no CAM


def test_status_metrics_models(client, tmp_path):
    assert client.get("/api/status").get_json()["camera"] == "replay"
    assert "records_total" in client.get("/api/v1/status").get_json()
    m = client.get("/metrics")
    assert m.status_code == 200 and "smearscope_test_uploads" in m.get_data(as_text=True)
    assert "Status" in client.get("/status").get_data(as_text=True)
    assert client.get("/models").status_code == 200


def test_security_headers(client):
    r = client.get("/")
    assert "default-src 'self'" in r.headers["Content-Security-Policy"]
    assert r.headers["X-Frame-Options"] == "DENY"
    assert "no-store" in r.headers["Cache-Control"]


def test_no_external_assets(client):
    for path in ["/", "/history", "/upload", "/samples", "/models", "/status"]:
        html = client.get(path).get_data(as_text=True)
        assert not re.search(r'(src|href)="(https?:)?//', html), path


def test_mjpeg_keepalive_when_the_camera_stops(app_svc):
    from device.web.live import mjpeg_frames

    _, svc = app_svc
    svc.push_frame(smear(6))
    parts = list(mjpeg_frames(svc.live, fps=20, heatmap=False, stop_after_s=0.5, keepalive_s=0.1))
    assert len(parts) >= 3  # the one frame, then re-sent so a gone client is noticed
    assert len(set(parts)) == 1


def test_date_range_pages_walk_time_order(client, app_svc):
    """With a date filter the history walks captured_at (cursor "time|seq"), across pages, no gaps."""
    _, svc = app_svc
    for i in range(7):
        for k in range(10):
            at = f"2026-03-0{i + 1}T10:00:{k:02d}.000Z"
            svc.store.add_result(
                {"source": "camera", "label": "Pre", "captured_at": at, "probabilities": {"Pre": 1.0}}
            )
    got, before = [], None
    while True:
        url = "/api/v1/results?from=2026-03-02&to=2026-03-06&limit=7" + (
            f"&before={before}" if before else ""
        )
        body = client.get(url).get_json()
        got += body["results"]
        before = body["next_before"]
        if before is None:
            break
    times = [r["captured_at"] for r in got]
    assert len(got) == 50 and times == sorted(times, reverse=True) and len(set(r["id"] for r in got)) == 50
    assert times[0].startswith("2026-03-06") and times[-1].startswith("2026-03-02")
    assert client.get("/api/v1/results?from=2026-03-02&before=garbage").status_code == 400
    html = client.get("/history?from=2026-03-01&to=2026-03-07").get_data(as_text=True)
    assert "before=2026-03-" in html


def test_every_route_needs_login(app_svc):
    """Walks the URL map, so a route added later without protection fails here."""
    app, _ = app_svc
    c = app.test_client()
    public = {"/healthz", "/login", "/static/<path:filename>"}
    checked = 0
    for rule in app.url_map.iter_rules():
        if rule.rule in public:
            continue
        url = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: "a" * 64 if m.group(1) == "sha" else "x", rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            r = c.open(url, method=method)
            assert r.status_code in (302, 401), (method, url, r.status_code)
            checked += 1
    assert checked > 30


def test_thumbnail_goes_with_its_image(client, app_svc):
    _, svc = app_svc
    svc.push_frame(smear(8, 300))
    sha = svc.capture_field(None, "tech")["image_sha256"]
    assert client.get(f"/image/{sha}/thumb.jpg").status_code == 200
    svc.store.image_path(sha).unlink()  # what retention does after the hub has the image
    assert client.get(f"/image/{sha}/thumb.jpg").status_code == 404
    assert not any((svc.store.data_dir / "thumbs").rglob(f"{sha}*"))


def test_history_filter_by_slide_id(client, app_svc):
    _, svc = app_svc
    s = svc.store.open_sample("LAB-42", "", "tech")
    svc.push_frame(smear(9))
    rec = svc.capture_field(s["id"], "tech")
    svc.capture_field(None, "tech")
    got = client.get("/api/v1/results?sample=LAB-42").get_json()["results"]
    assert [r["id"] for r in got] == [rec["id"]]
    assert client.get("/api/v1/results?sample=NOPE").status_code == 400
    assert client.get("/history?sample=LAB-42").status_code == 200


def test_sync_quarantine_admin_page(app_svc):
    app, svc = app_svc
    svc.push_frame(smear(10))
    rec = svc.capture_field(None, "tech")
    svc.store.conn.execute(
        "UPDATE results SET sync_state = 'rejected', sync_error = 'unknown label' WHERE id = ?", (rec["id"],)
    )
    tech = app.test_client()
    login(tech)
    assert tech.get("/admin/sync").status_code == 403
    admin = app.test_client()
    login(admin, "admin")
    assert "unknown label" in admin.get("/admin/sync").get_data(as_text=True)
    assert admin.post("/admin/sync/retry", data={"csrf_token": token_of(admin)}).status_code == 302
    state = svc.store.conn.execute("SELECT sync_state FROM results WHERE id = ?", (rec["id"],)).fetchone()[0]
    assert state == "pending"


def test_user_text_is_escaped_and_csv_formulas_defused(client, app_svc):
    _, svc = app_svc
    s = svc.store.open_sample("<script>alert(1)</script>", '=HYPERLINK("http://x")', "tech")
    svc.push_frame(smear(11))
    rec = svc.capture_field(s["id"], "tech")
    svc.store.add_review(rec["id"], None, "=1+2", "tech")
    html = client.get(f"/samples/{s['id']}").get_data(as_text=True)
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html
    body = client.get(f"/export.csv?sample={s['id']}").get_data(as_text=True)
    assert "'=1+2" in body and ",=1+2" not in body


def test_confidence_is_never_shown_as_certainty() -> None:
    from device.web import confidence_text

    assert confidence_text(0.9996) == "≥ 99.9%"  # "%.1f" would print 100.0%
    assert confidence_text(0.9984) == "99.8%"
    assert confidence_text(0.5) == "50.0%" and confidence_text(None) == "0.0%"
