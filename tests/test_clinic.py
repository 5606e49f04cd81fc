"""Clinic-ready (issue 26): the slide report (HTML + PDF), the station's time zone, exports that open in
a spreadsheet with their reviews, uploads from elsewhere, and the small things (admin index, Finish
confirms, why Capture is disabled, status figures, the calibration text)."""

from __future__ import annotations

import csv
import html
import io
import json
import re
from pathlib import Path

import pytest
from babel.dates import format_date
from webkit import encode, smear, token_of

from common.wording import DISCLAIMER
from device.config import load_config
from device.errors import ConfigError
from device.localtime import local_text, parse_utc, station_zone, system_zone_name
from device.report.pdf import find_font, render_pdf
from device.report.slide import build_slide_report
from device.telemetry import rate

KEY_ID = "0123456789abcdef0123456789abcdef"
SLIDE = "ŁÓDŹ-Ωμέγα 42"
REVIEWER = "Zoë Ødegård"


def _signed_bundle(tmp_path: Path) -> Path:
    """A bundle folder with the signature file the report reads its key id from."""
    d = tmp_path / "bundle"
    d.mkdir()
    doc = {"key_id": KEY_ID, "signed_at": "2026-11-30T10:00:00Z", "payload": "{}", "signature": ""}
    (d / "signature.json").write_text(json.dumps(doc))
    return d


def _slide(app, svc, tmp_path, fields: int = 12) -> dict:
    """A sample with `fields` captured fields, two reviews, the Kolkata zone and a signed bundle."""
    app.extensions["smearscope"].config.device.timezone = "Asia/Kolkata"  # +05:30 all year, "IST"
    info = svc.ensemble_info()[0]
    bundle = _signed_bundle(tmp_path)
    svc.ensemble_info = lambda: [{**info, "sha256": "0" * 64, "path": str(bundle)}]
    s = svc.store.open_sample(SLIDE, "EDTA, 3 h", "tech")
    recs = []
    for i in range(fields):
        svc.push_frame(smear(i))
        recs.append(svc.capture_field(s["id"], "tech"))
    svc.store.add_review(recs[0]["id"], None, "", REVIEWER)
    svc.store.add_review(recs[1]["id"], "Benign", "looks reactive", REVIEWER)
    return svc.store.get_sample(s["id"])


def _pdf_text(data: bytes) -> tuple[int, str, tuple[float, float]]:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    box = reader.pages[0].mediabox
    text = "\n".join(p.extract_text() for p in reader.pages)
    return len(reader.pages), " ".join(text.split()), (float(box.width), float(box.height))


def test_the_pdf_report_carries_what_the_clinician_needs(client, app_svc, tmp_path):
    if find_font() is None:
        pytest.skip("fonts-dejavu-core is not installed (scripts/system-deps.sh)")
    app, svc = app_svc
    s = _slide(app, svc, tmp_path)
    summary = svc.store.sample_summary(s["id"])
    r = client.get(f"/samples/{s['id']}/report.pdf")
    assert r.status_code == 200 and r.mimetype == "application/pdf"
    assert "attachment" in r.headers["Content-Disposition"]
    pages, text, size = _pdf_text(r.data)
    assert pages == 1 and round(size[0]) == 595  # A4: 595 x 842 pt
    for needed in (
        SLIDE, s["id"], "insufficient — capture at least", "Rule: suspicious if", "12 fields",
        f"{summary['confident_fields']} confident", f"{summary['uncertain_fields']} uncertain",
        "2 reviewed", "Asia/Kolkata", "IST", "fake", KEY_ID, REVIEWER, "looks reactive",
        DISCLAIMER.rstrip("."), "EDTA, 3 h", svc.store.device_id,
    ):  # fmt: skip
        assert needed in text, needed
    assert summary["call"] == "insufficient"
    started = parse_utc(s["started_at"]).astimezone(station_zone("Asia/Kolkata"))
    assert f"{started:%b} {started.day}, {started.year}" in text  # Babel's date, the station's zone
    letter = client.get(f"/samples/{s['id']}/report.pdf?paper=letter")
    pages, _, size = _pdf_text(letter.data)
    assert pages == 1 and (round(size[0]), round(size[1])) == (612, 792)
    assert client.get(f"/samples/{s['id']}/report.pdf?paper=a3").status_code == 400
    assert client.get("/samples/nope/report.pdf").status_code == 404


def test_the_pdf_report_is_in_the_asking_users_language(client, app_svc, tmp_path):
    if find_font() is None:
        pytest.skip("fonts-dejavu-core is not installed (scripts/system-deps.sh)")
    app, svc = app_svc
    s = _slide(app, svc, tmp_path)
    r = client.get(f"/samples/{s['id']}/report.pdf", headers={"Accept-Language": "fr"})
    pages, text, _ = _pdf_text(r.data)
    assert pages == 1
    for needed in (
        "rapport de dépistage de la lame", "Résultat de la lame", "Champs représentatifs", "Relectures",
        "Imprimé", "insuffisant", "Règle :", "Asia/Kolkata", "IST", SLIDE, REVIEWER, "looks reactive",
        "Aide au dépistage pour personnel formé",
    ):  # fmt: skip
        assert needed in text, needed
    started = parse_utc(s["started_at"]).astimezone(station_zone("Asia/Kolkata"))
    assert format_date(started, "medium", locale="fr") in text  # "7 déc. 2026": Babel's French date
    assert "Slide call" not in text and "Reviews" not in text and "Printed" not in text


def crowded_slide(store, image_jpeg: bytes) -> str:
    """The longest slide a report must still fit on one page: a 200-character slide id, long notes,
    four labels, six images, nine reviews with long comments."""
    s = store.open_sample("W" * 200, "n" * 2000, "a-rather-long-user-name")
    labels = ["Benign", "Early", "Pre", "Pro"]
    sha = store.put_image(image_jpeg)
    for i in range(18):
        lb = labels[i % 4]
        rec = store.add_result(
            {"source": "camera", "sample_id": s["id"], "image_sha256": sha, "label": lb, "confidence": 0.9,
             "abstained": False, "probabilities": {x: 0.25 for x in labels}, "quality": {"ok": True},
             "models": [{"name": "m", "sha256": "e" * 64}]}
        )  # fmt: skip
        if i % 2 == 0:
            store.add_review(rec["id"], labels[(i + 1) % 4], "c" * 400, "Reviewer " + "X" * 40)
    return s["id"]


def test_a_crowded_slide_still_fits_one_page(app_svc):
    _, svc = app_svc
    sid = crowded_slide(svc.store, encode(smear(2, 400), ".jpg"))
    report = build_slide_report(svc.store, sid, zone=station_zone("UTC"))
    assert len(report.images) == 6 and len(report.reviews) == 9
    for paper in ("a4", "letter"):
        pages, text, _ = _pdf_text(render_pdf(report, paper))
        assert pages == 1 and "3 more on the station's sample page" in text and "not a diagnosis" in text


def test_without_dejavu_the_pdf_falls_back_to_a_latin1_font(app_svc, tmp_path):
    app, svc = app_svc
    s = _slide(app, svc, tmp_path, fields=2)
    report = build_slide_report(svc.store, s["id"], zone=station_zone("UTC"), in_service=svc.ensemble_info())
    pages, text, _ = _pdf_text(render_pdf(report, font_dirs=(tmp_path / "no-fonts",)))
    assert pages == 1 and "42" in text and "not a diagnosis" in text and KEY_ID in text


def test_the_report_page_prints_the_same_and_the_sample_page_links_it(client, app_svc, tmp_path):
    app, svc = app_svc
    s = _slide(app, svc, tmp_path, fields=4)
    html = client.get(f"/samples/{s['id']}/report").get_data(as_text=True)
    for needed in (SLIDE, "Asia/Kolkata", KEY_ID, REVIEWER, "Rule: suspicious if", "not a diagnosis"):
        assert needed in html, needed
    assert html.count('class="report-images"') == 1 and "/image/" in html
    sample_page = client.get(f"/samples/{s['id']}").get_data(as_text=True)
    assert f"/samples/{s['id']}/report" in sample_page and f"/samples/{s['id']}/report.pdf" in sample_page
    assert client.get("/samples/nope/report").status_code == 404


def test_the_report_says_when_an_image_is_gone_and_no_model_key_is_known(client, app_svc):
    _, svc = app_svc
    s = svc.store.open_sample("S-2", "", "tech")
    svc.push_frame(smear(3))
    rec = svc.capture_field(s["id"], "tech")
    svc.store.image_path(rec["image_sha256"]).unlink()  # removed by retention after syncing
    _, text, _ = _pdf_text(client.get(f"/samples/{s['id']}/report.pdf").data)
    assert "image not on this station" in text and "bundle not in service on this station" in text


def test_timezone_key_is_validated_and_defaults_to_the_system_zone(tmp_path):
    cfg = load_config(data_dir=tmp_path, system_config=None, env={})
    assert cfg.device.timezone == ""
    ok = load_config(
        data_dir=tmp_path, system_config=None, env={}, overrides={"device": {"timezone": "Europe/Berlin"}}
    )
    assert station_zone(ok.device.timezone).key == "Europe/Berlin"
    with pytest.raises(ConfigError, match=r"\[device\] timezone"):
        load_config(
            data_dir=tmp_path, system_config=None, env={}, overrides={"device": {"timezone": "Mars/Base"}}
        )
    link = tmp_path / "localtime"
    link.symlink_to("/usr/share/zoneinfo/America/Chicago")
    assert system_zone_name(link, tmp_path / "none") == "America/Chicago"
    (tmp_path / "timezone").write_text("Asia/Tokyo\n")
    assert system_zone_name(tmp_path / "missing", tmp_path / "timezone") == "Asia/Tokyo"
    assert system_zone_name(tmp_path / "missing", tmp_path / "none") == "UTC"
    assert local_text("2026-07-01T12:00:00.000Z", station_zone("Europe/Berlin")) == "2026-07-01 14:00 CEST"


def test_csv_opens_with_the_header_and_a_reviewed_export_carries_the_reviews(client, app_svc):
    _, svc = app_svc
    s = svc.store.open_sample("CSV-1", "", "tech")
    svc.push_frame(smear(5))
    recs = [svc.capture_field(s["id"], "tech") for _ in range(3)]
    svc.store.add_review(recs[1]["id"], "Benign", "=1+2 reactive", REVIEWER)
    body = client.get("/export.csv?reviewed=yes").get_data(as_text=True)
    rows = list(csv.DictReader(io.StringIO(body)))
    assert body.startswith("id,seq,captured_at,")
    assert [(r["kind"], r["id"] if r["kind"] == "classification" else r["review_of"]) for r in rows] == [
        ("classification", recs[1]["id"]),
        ("review", recs[1]["id"]),
    ]
    original, review = rows
    assert original["reviewed_label"] == "Benign" and review["reviewed_label"] == "Benign"
    assert review["reviewer"] == REVIEWER and review["comment"] == "'=1+2 reactive"  # formula defused
    assert all("not a diagnosis" in r["disclaimer"] for r in rows)
    data = client.get("/api/v1/export?format=json&reviewed=yes").get_json()
    assert [r["kind"] for r in data["records"]] == ["classification", "review"]
    assert data["records"][1]["reviewer"] == REVIEWER
    everything = list(csv.DictReader(io.StringIO(client.get("/export.csv").get_data(as_text=True))))
    assert len(everything) == 4 and {r["sample_id"] for r in everything} == {s["id"]}


def test_hub_csv_has_the_reviews_and_the_disclaimer(tmp_path):
    from test_hub_dashboard import _hub

    hub, c, _, _, reviewed = _hub(tmp_path)
    c.post("/login", data={"token": hub.user_token})
    text = c.get("/export/results.csv").get_data(as_text=True)
    assert text.startswith("id,device,")
    rows = {r["id"]: r for r in csv.DictReader(io.StringIO(text))}
    assert rows[reviewed["id"]]["reviewed_label"] == "Pre"  # the review's label, on the reviewed record
    review = next(r for r in rows.values() if r["kind"] == "review")
    assert review["reviewed_label"] == "Pre" and review["review_of"] == reviewed["id"]
    assert all("not a diagnosis" in r["disclaimer"] for r in rows.values())


def test_admin_index_reaches_calibration_and_the_menu_shows_it_to_admins(client, admin):
    page = admin.get("/admin")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'href="/admin/calibration"' in html and 'href="/admin/users"' in html
    assert ">Calibration</a>" in admin.get("/").get_data(as_text=True)
    assert client.get("/admin").status_code == 403
    assert ">Calibration</a>" not in client.get("/").get_data(as_text=True)
    cal = admin.get("/admin/calibration").get_data(as_text=True)
    assert "(7.5 µm per red" in cal  # the ruler's figure, from [optics] rbc_diameter_um


def test_capture_says_why_it_is_disabled(client, app_svc):
    _, svc = app_svc
    html = client.get("/").get_data(as_text=True)
    button = re.search(r'<button id="capture"[^>]*>', html).group(0)
    assert "disabled" in button and 'title="Start a sample first' in button
    assert 'id="capture-why"' in html and "Start a sample first" in html
    svc.store.open_sample("CAP-1", "", "tech")
    html = client.get("/").get_data(as_text=True)
    assert "No classified field yet" in html


def test_finish_asks_first_without_inline_script(client, app_svc):
    _, svc = app_svc
    s = svc.store.open_sample("FIN-1", "", "tech")
    html = client.get(f"/samples/{s['id']}").get_data(as_text=True)
    assert 'data-confirm="Finish sample FIN-1?' in html and 'id="confirm-dialog"' in html
    tok = token_of(client)
    asked = client.post(f"/samples/{s['id']}/finish", data={"csrf_token": tok})
    assert asked.status_code == 200 and 'name="confirm" value="yes"' in asked.get_data(as_text=True)
    assert svc.store.get_sample(s["id"])["status"] == "open"
    done = client.post(f"/samples/{s['id']}/finish", data={"csrf_token": tok, "confirm": "yes"})
    assert done.status_code == 302 and svc.store.get_sample(s["id"])["status"] == "finished"


def test_status_figures_are_rounded(client, app_svc):
    _, svc = app_svc
    base = svc.status()
    svc.status = lambda: {**base, "fps": 4.98, "inference_ms_p50": 842.598, "inference_ms_p95": 1203.25,
                          "uptime_s": 123456.78, "ratio": 1.023456}  # fmt: skip
    html = client.get("/status").get_data(as_text=True)
    assert "843 ms" in html and "842.598" not in html and "1,203 ms" in html and "5.0 a second" in html
    assert "1 day" in html and "1.023<" in html and "e+0" not in html
    # every figure has words for a label, not a key
    assert "inference ms p50" not in html and "inference_ms" not in html and "uptime s" not in html
    assert "Time to classify a field (median)" in html and "Frames taken" in html
    fr = client.get("/status", headers={"Accept-Language": "fr"}).get_data(as_text=True)
    assert "843 ms" in fr and "1 203 ms" in fr.replace("\u202f", " ").replace("\xa0", " ")


def test_frame_rate_counts_frames_not_classifications():
    assert rate([0.0, 0.2, 0.4, 0.6, 0.8, 1.0], now=1.0) == 5.0
    assert rate([0.0, 0.2], now=0.3) == 0.0  # too few to tell
    assert rate([0.0, 0.2, 0.4], now=10.0) == 0.0  # none lately


def test_upload_defaults_to_auto_without_inline_handlers(client, app_svc):
    _, svc = app_svc
    page = client.get("/upload").get_data(as_text=True)
    assert re.search(r'value="auto"\s+checked', page)
    assert not re.search(r"\son[a-z]+=", page)  # the CSP blocks inline handlers
    assert "<legend>" in page and "upload.js" in page
    jpg = encode(smear(), ".jpg")
    tok = token_of(client)

    def post(**form):
        data = {"file": [(io.BytesIO(jpg), "a.jpg")], "csrf_token": tok, **form}
        return client.post("/upload", data=data, content_type="multipart/form-data")

    assert post(um_per_px="auto").status_code == 200 and svc.last_um_per_px == "auto"
    assert post().status_code == 200 and svc.last_um_per_px == "auto"  # the page's default
    assert post(um_per_px="auto", um_per_px_typed="0.25").status_code == 200 and svc.last_um_per_px == 0.25
    r = post(um_per_px="typed")
    assert r.status_code == 400 and "type the images' scale" in html.unescape(r.get_data(as_text=True))


def test_upload_says_when_auto_cannot_tell_and_offers_the_typed_scale(client, app_svc):
    _, svc = app_svc
    plain = svc.classify_upload

    def cannot_tell(rgb, **kw):
        rec = plain(rgb, **kw)
        reason = "scale unknown: the red cells cannot tell the magnification (too few cells)"
        return {**rec, "abstained": True, "reason": reason,
                "field": {"state": "refused", "scale_source": "auto", "um_per_px": None,
                          "scale_check": {"message": "not run"}}}  # fmt: skip

    svc.classify_upload = cannot_tell
    data = {"file": [(io.BytesIO(encode(smear(), ".jpg")), "a.jpg")], "csrf_token": token_of(client)}
    page = html.unescape(
        client.post("/upload", data=data, content_type="multipart/form-data").get_data(as_text=True)
    )
    assert "could not be told from this image's red cells" in page and 'href="#scale-typed"' in page


@pytest.mark.parametrize("path", ["/samples/x/report", "/samples/x/report.pdf", "/admin"])
def test_new_pages_need_login(app_svc, path):
    r = app_svc[0].test_client().get(path)
    assert r.status_code == 302 and "/login" in r.headers["Location"]


#: What `Services.status()` returns (device/services.py, the pipeline's status, sync and updates).
FULL_STATUS = {
    "version": "0.1.0", "device_id": "dev-1",
    "camera": {"source": "replay", "state": "running", "detail": "", "error": None},
    "frames_captured": 12345, "frames_rejected": 3, "frames_classified": 40, "frames_dropped": 7,
    "records_stored": 41, "store_dropped": 0, "store_queue": 0, "fps": 4.96, "classified_fps": 0.2,
    "inference_ms_p50": 842.598, "inference_ms_p95": 12034.5, "latency_ms_p50": 901.25,
    "latency_ms_p95": None,
    "workers": [{"name": "classify", "alive": True, "stage": "inference", "restarts": 0, "last_error": None}],
    "uptime_s": 7384.2, "models": [{"name": "m1", "sha256": "ab" * 32}], "disk_free_bytes": 12_345_678_901,
    "disk_full": False, "storage": "ok", "records_total": 41, "unsynced": 41, "last_error": None,
    "sync": {"enabled": True, "hub_url": "https://hub", "state": "idle", "last_success": None,
             "last_attempt": None, "last_error": None, "backoff": 0.0, "sent_total": 0, "clock_skew_s": 3.5,
             "pending": 41, "synced": 0, "rejected": 0, "rejected_recent": []},
    "calibration": {"profile": "HQ 40x", "um_per_px": 0.155, "method": "auto", "white_gains": None,
                    "controls_applied": {}, "controls_ignored": [], "profiles_file": "/x", "error": None},
    "model_update": {"policy": "manual", "staged": None, "last_result": None, "last_check": None,
                     "last_error": None, "bytes_downloaded": 0},
    "model_signatures": {"ok": True, "allow_unsigned": False, "problems": []},
    "scale": {"state": "ok"}, "tiling": {"settle_frames": 2, "rule": "..."}, "disclaimer": DISCLAIMER,
}  # fmt: skip


def test_every_status_figure_has_words_and_a_unit(app_svc):
    from device.web.status_view import sections

    app = app_svc[0]
    with app.test_request_context("/", headers={"Accept-Language": "pt"}):
        secs = sections(FULL_STATUS)
    figures = {f.label: f.text for s in secs for f in s.figures}
    assert not [k for k in figures if "_" in k]  # no figure falls back to its key
    assert figures["Tempo para classificar um campo (mediana)"] == "843 ms"
    assert figures["Tempo para classificar um campo (5 % mais lentos)"] == "12,0 s"
    assert figures["Da imagem ao resultado (5 % mais lentos)"] == "ainda não medido"
    assert figures["Imagens da câmara"] == "5,0 por segundo"
    assert figures["Imagens captadas"].replace("\xa0", " ") in ("12 345", "12.345")
    assert figures["Espaço livre em disco"] == "12,3 GB" and figures["A funcionar há"] == "2 horas"
    assert figures["Escala da câmara"] == "0,155 µm/px" and figures["Câmara"] == "replay — a funcionar"
    workers = next(s.table for s in secs if s.table)
    assert workers[1] == ["classify", "sim", "a classificar", "0"]
