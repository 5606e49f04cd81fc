"""Languages and time on the technician's page: catalogues complete and current, no template word
outside them, the language picker remembered per user, dates in the station's zone with the zone shown,
and refusals/doubts as translated sentences with the English reason behind "details"."""

from __future__ import annotations

import ast
import io
import re
from pathlib import Path

import pytest
from babel.messages.frontend import CommandLineInterface
from babel.messages.mofile import read_mo, write_mo
from babel.messages.pofile import read_po
from i18n_scan import untranslated
from webkit import PASSWORD, csrf_of, login, make_app

from common.wording import DISCLAIMER, UNCERTAIN
from device.web import advice, auth

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / "device/web/templates"
TRANSLATIONS = ROOT / "device/web/translations"
LANGS = ("fr", "pt", "es")


def _messages(catalog) -> dict:
    def key(x):
        return tuple(x) if isinstance(x, list) else x

    return {key(m.id): key(m.string) for m in catalog if m.id}


# --- the catalogue ------------------------------------------------------------------------------


def test_no_template_word_escapes_the_catalogue():
    found = {p.name: untranslated(p.read_text(encoding="utf-8")) for p in sorted(TEMPLATES.glob("*.html"))}
    assert {k: v for k, v in found.items() if v} == {}


def test_the_scanner_finds_bare_words():
    src = (
        '<p>Hello there</p><a title="Do it" href="{{ x }}">{{ _("Fine") }}</a>'
        '{% set why = \'two words\' %}<input type="submit" value="Send now">'
        '<img alt="{{ _("ok") }}">{% block title %}{{ _("Live") }}{% endblock %}'
        " µm/px <code>smearscope run</code>"
    )
    assert untranslated(src) == [
        "'two words'",
        "Hello there",
        "<a title='Do it'>",
        "<input value='Send now'>",
    ]


def test_the_template_is_current(tmp_path, monkeypatch):
    """Every marked string is in messages.pot (run the extract command of docs/translating.md)."""
    out = tmp_path / "fresh.pot"
    monkeypatch.chdir(ROOT)
    CommandLineInterface().run(
        [
            "pybabel",
            "-q",
            "extract",
            "-F",
            "babel.cfg",
            "-k",
            "lazy_gettext",
            "--no-location",
            "-o",
            str(out),
            ".",
        ]
    )
    fresh = set(_messages(read_po(out.open("rb"))))
    committed = set(_messages(read_po((TRANSLATIONS / "messages.pot").open("rb"))))
    assert fresh - committed == set(), "strings not in messages.pot"
    assert committed - fresh == set(), "strings in messages.pot that nothing uses"


@pytest.mark.parametrize("lang", LANGS)
def test_every_message_is_translated(lang):
    pot = set(_messages(read_po((TRANSLATIONS / "messages.pot").open("rb"))))
    po = read_po((TRANSLATIONS / lang / "LC_MESSAGES/messages.po").open("rb"), locale=lang)
    got = _messages(po)
    assert pot - set(got) == set(), f"{lang}: msgids missing (pybabel update)"
    empty = [k for k, v in got.items() if not v or (isinstance(v, tuple) and not all(v))]
    assert empty == [], f"{lang}: untranslated"
    fuzzy = [m.id for m in po if m.id and m.fuzzy]
    assert fuzzy == []
    assert [(m.id, e) for m, e in po.check()] == []  # placeholders agree with the English


@pytest.mark.parametrize("lang", LANGS)
def test_compiled_catalogue_matches_its_source(lang):
    folder = TRANSLATIONS / lang / "LC_MESSAGES"
    po = read_po((folder / "messages.po").open("rb"), locale=lang)
    buf = io.BytesIO()
    write_mo(buf, po)
    buf.seek(0)
    fresh = _messages(read_mo(buf))
    committed = _messages(read_mo((folder / "messages.mo").open("rb")))
    assert fresh == committed, f"{lang}: messages.mo is stale: pybabel compile -d device/web/translations"


def test_safety_wording_is_the_same_words():
    from device.optics.field import RULE

    assert advice.DISCLAIMER_TEXT._args[0] == DISCLAIMER
    assert advice.UNCERTAIN_TEXT._args[0] == UNCERTAIN
    assert advice.FIELD_RULE_TEXT._args[0] == RULE


# --- language choice -----------------------------------------------------------------------------


@pytest.fixture
def app_svc(tmp_path):
    app, svc = make_app(tmp_path)
    object.__setattr__(svc.config.device, "timezone", "Africa/Nairobi")
    return app, svc


def test_accept_language_is_the_default(app_svc):
    c = app_svc[0].test_client()
    html = c.get("/login", headers={"Accept-Language": "pt-BR,pt;q=0.9,en;q=0.5"}).get_data(as_text=True)
    assert '<html lang="pt">' in html and "Entrar" in html
    assert "Uma ajuda ao rastreio para pessoal treinado, não um diagnóstico." in html
    html = c.get("/login", headers={"Accept-Language": "de"}).get_data(as_text=True)
    assert '<html lang="en">' in html and DISCLAIMER in html


def test_picker_sets_a_cookie_then_the_user_keeps_the_choice(app_svc):
    app, svc = app_svc
    c = app.test_client()
    r = c.post("/language", data={"language": "fr", "next": "/login", "csrf_token": csrf_of(c)})
    assert r.status_code == 302 and "smearscope_lang=fr" in r.headers["Set-Cookie"]
    assert "Se connecter" in c.get("/login").get_data(as_text=True)
    assert login(c).status_code == 302
    r = c.post("/language", data={"language": "pt", "next": "/samples", "csrf_token": csrf_of(c)})
    assert r.headers["Location"].endswith("/samples")
    assert auth.get_user(svc.store.conn, "tech").language == "pt"
    # another browser, French cookie and Accept-Language: the user's own choice wins after login
    other = app.test_client()
    other.set_cookie("smearscope_lang", "fr")
    token = csrf_of(other)
    other.post("/login", data={"username": "tech", "password": PASSWORD, "csrf_token": token})
    assert "Amostras" in other.get("/samples", headers={"Accept-Language": "fr"}).get_data(as_text=True)


def test_picker_refuses_unknown_languages_and_missing_csrf(app_svc):
    app, svc = app_svc
    c = app.test_client()
    login(c)
    c.post("/language", data={"language": "xx", "csrf_token": csrf_of(c)})
    c.post("/language", data={"language": "fr"})
    assert auth.get_user(svc.store.conn, "tech").language is None


def test_dates_are_in_the_station_zone_with_the_zone_shown(app_svc):
    app, svc = app_svc
    c = app.test_client()
    login(c)
    c.post("/samples", data={"slide_id": "S-1", "csrf_token": csrf_of(c)})
    sample = svc.store.list_samples(limit=1)[0]
    started = sample["started_at"]  # UTC
    html = c.get(f"/samples/{sample['id']}", headers={"Accept-Language": "fr"}).get_data(as_text=True)
    hour_utc = int(started[11:13])
    local = f"{(hour_utc + 3) % 24:02d}:{started[14:16]}"
    assert re.search(rf"{local}:\d\d EAT", html), "Nairobi time (UTC+3) with its zone"
    assert " UTC" not in html.split("<main>")[1]


# --- words a technician can act on ---------------------------------------------------------------


def _in_request(app, lang="en"):
    return app.test_request_context("/", headers={"Accept-Language": lang})


def test_refusals_say_what_happened_and_what_to_do(app_svc):
    app = app_svc[0]
    small = (
        "the image is 120x90 px at the models' scale (0.373 µm/px), 40% of a 224x224 tile (at least 60% "
        "needed): use a higher magnification or a larger image"
    )
    with _in_request(app):
        a = advice.refusal("not classified: " + small)
        assert a.kind == "image_size" and a.refused and a.details == small
        assert a.sentence.startswith("The picture is too small to judge")
        unknown = "scale unknown: the red cells cannot tell the magnification (x)"
        assert advice.refusal(unknown).kind == "scale_unknown"
        mismatch = (
            "magnification differs from the calibration — objective changed? (red cells say 0.14 µm/px)"
        )
        assert advice.refusal(mismatch).kind == "scale_mismatch"
        energy = "input unlike the training images (efficientnet-lite0-all4-int8 energy 1.1 < 1.6)"
        b = advice.for_record({"abstained": True, "reason": energy, "label": "Pre"})
        assert b.kind == "unfamiliar_input" and not b.refused and "efficientnet" not in b.sentence
        assert "efficientnet" in b.details
        assert advice.for_record({"abstained": False, "label": "Benign"}) is None
        stored = advice.for_record({"abstained": True, "reason": unknown, "label": None})
        assert stored.refused and stored.kind == "scale_unknown"
    with _in_request(app, "fr"):
        a = advice.refusal("not classified: " + small)
        assert a.sentence.startswith("L’image est trop petite pour juger") and a.details == small
        q = advice.for_live({"state": "rejected", "rejected": True, "quality": {"reasons": ["out of focus"]}})
        assert q.refused and "vis micrométrique" in q.sentence


def test_live_result_carries_time_advice_and_no_call(app_svc):
    from device.web.live import live_payload

    app = app_svc[0]
    result = {
        "label": "Pre",
        "abstained": True,
        "reason": "models disagree (a: Pre, b: Benign)",
        "probabilities": {"Pre": 0.5, "Benign": 0.5},
        "captured_at": "2026-12-07T06:18:58.000Z",
        "quality": {"ok": True, "reasons": []},
    }
    with _in_request(app, "pt"):
        view = live_payload(result)["view"]
    assert view["time"] == "09:18:58 EAT"
    assert view["has_call"] is False
    assert view["advice"]["kind"] == "models_disagree"
    assert view["advice"]["sentence"].startswith("Os modelos discordam")
    with _in_request(app):
        assert live_payload({**result, "abstained": False})["view"] == {
            "time": "09:18:58 EAT", "has_call": True, "advice": None, "quality": [],
        }  # fmt: skip


def test_record_page_greys_bars_when_no_call_was_made(app_svc):
    app, svc = app_svc
    c = app.test_client()
    login(c)
    rec = svc.store.add_result(
        {
            "source": "upload", "kind": "classification", "label": "Pre", "confidence": 0.4,
            "probabilities": {"Pre": 0.4, "Benign": 0.6}, "abstained": True,
            "reason": "confidence 0.40 below threshold 0.60", "quality": {"ok": True, "reasons": []},
            "models": [{"name": "fake", "sha256": "0" * 64}],
        }
    )  # fmt: skip
    html = c.get(f"/results/{rec['id']}", headers={"Accept-Language": "fr"}).get_data(as_text=True)
    assert 'class="bars no-call"' in html and "Aucun résultat n’a été rendu" in html
    assert "<summary>Détails</summary>" in html and "confidence 0.40 below threshold 0.60" in html
    assert "Les modèles ne sont pas sûrs pour ce champ" in html


# --- refusals of uploads, HTTP errors, calibration runs ------------------------------------------


def test_every_upload_refusal_kind_has_its_own_sentence(app_svc):
    from device.web import upload_check

    kinds = {upload_check.NAME, upload_check.TOO_BIG, upload_check.EMPTY, upload_check.TYPE,
             upload_check.NOT_IMAGE, upload_check.DAMAGED, upload_check.PIXELS, "busy", "sample",
             "finished", "no_file", "files", "scale", "storage", "storage_partial"}  # fmt: skip
    with _in_request(app_svc[0], "fr"):
        fallback = advice.upload_refusal("unknown", "x").sentence
        said = {k: advice.upload_refusal(k, "engineer: 12.3 MB > 10 MB") for k in kinds}
    assert all(a.sentence != fallback and a.details == "engineer: 12.3 MB > 10 MB" for a in said.values())
    assert len({a.sentence for a in said.values()}) == len(kinds)  # one sentence each
    REJECTED = "UploadRejected"  # noqa: N806
    # every refusal in the checks names its kind, so none falls back to the "other" sentence
    tree = ast.parse((ROOT / "device/web/upload_check.py").read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == REJECTED]
    assert len(calls) >= 19 and all(len(c.args) == 3 for c in calls)


def test_an_upload_refusal_is_a_sentence_with_the_details_behind(app_svc):
    app, svc = app_svc
    c = app.test_client()
    login(c)
    tok = csrf_of(c)
    gif = b"GIF89a" + b"\0" * 64
    r = c.post("/upload", data={"file": [(io.BytesIO(gif), "a.gif")], "csrf_token": tok},
               content_type="multipart/form-data", headers={"Accept-Language": "fr"})  # fmt: skip
    page = r.get_data(as_text=True).replace("&#39;", "'")
    assert r.status_code == 415
    assert "Rien n’a été enregistré" in page and "Ce type de fichier n’est pas accepté" in page
    details = re.search(r"<details.*?</details>", page, re.S).group(0)
    assert "GIF files are not supported" in details  # the engineer's reason, behind "details"
    api = c.post(
        "/api/v1/classify",
        data={"file": [(io.BytesIO(gif), "a.gif")]},
        headers={"X-CSRF-Token": tok, "Accept-Language": "es"},
        content_type="multipart/form-data",
    )
    assert api.status_code == 415 and "GIF" in api.get_json()["error"]
    assert api.get_json()["message"].startswith("Este tipo de archivo no se acepta")


def test_http_errors_have_human_names_in_the_readers_language(tmp_path):
    app, _svc = make_app(tmp_path)

    @app.route("/boom")
    def boom():
        raise RuntimeError("secret internals /var/lib/x")

    c = app.test_client()
    login(c)
    page = c.get("/no-such-page", headers={"Accept-Language": "pt"})
    text = page.get_data(as_text=True)
    assert page.status_code == 404 and "404 · Não encontrado" in text and "Not Found" not in text
    assert "verifique o endereço" in text
    js = c.get("/api/v1/results/nope-nope", headers={"Accept-Language": "fr"})
    assert js.status_code == 404 and js.get_json()["error"]  # the view's own words
    missing = c.get("/api/v1/nothing-here", headers={"Accept-Language": "fr"})
    assert missing.status_code == 404 and missing.get_json()["error"].startswith("Cette page ou cet élément")
    app.config["PROPAGATE_EXCEPTIONS"] = False
    err = c.get("/boom", headers={"Accept-Language": "es"})
    body = err.get_data(as_text=True)
    assert err.status_code == 500 and "Error de la estación" in body and "secret internals" not in body
    tech = app.test_client()
    login(tech)
    denied = tech.get("/admin/users", headers={"Accept-Language": "fr"})
    assert denied.status_code == 403 and "403 · Non autorisé" in denied.get_data(as_text=True)


def test_calibration_progress_and_end_in_words(app_svc):
    from device.web.calibration import job_view

    app = app_svc[0]
    running = {"id": "j", "kind": "auto", "state": "running", "done": 3, "total": 12, "message": "7.1 px"}
    with _in_request(app, "fr"):
        v = job_view(running)["view"]
        assert (
            v["percent"] == 25 and v["step"] == "étape 3 sur 12 (25 %)" and v["text"] == "Mesure de l’échelle"
        )
        refused = "only 2 of 12 frames gave a confident red-cell estimate, 8 needed. Move to a thin area"
        f = job_view({**running, "state": "failed", "error": refused})["view"]
        assert (
            f["text"] == "Non mesuré"
            and f["sentence"].startswith("Trop peu d’images")
            and f["details"] == refused
        )
        done = job_view({**running, "state": "done", "done": 12})["view"]
        assert done["percent"] == 100 and done["text"].startswith("Terminé")
    assert job_view(None) is None
