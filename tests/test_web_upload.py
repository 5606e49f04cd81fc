"""Uploads: good files of every accepted type are classified; every bad one gets its 4xx and leaves
the store exactly as it was (rows and image files counted before/after)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from webkit import encode, login, make_app, smear, token_of

from device.web.upload_check import UploadRejected, check_upload


@pytest.fixture
def tech_svc(tmp_path):
    app, svc = make_app(tmp_path)
    client = app.test_client()
    login(client)
    return client, svc


def _state(svc) -> tuple[int, int, int]:
    rows = svc.store.conn.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    imgs = svc.store.conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]
    files = sum(1 for p in svc.store.images_dir.rglob("*") if p.is_file())
    return rows, imgs, files


def _post(client, files, sample=None, api=True):
    data = {"file": [(io.BytesIO(b), name) for name, b in files]}
    if sample:
        data["sample"] = sample
    url = "/api/v1/classify" if api else "/upload"
    if not api:
        data["csrf_token"] = token_of(client)
    return client.post(
        url, data=data, content_type="multipart/form-data", headers={"X-CSRF-Token": token_of(client)}
    )


def _tiff(rgb: np.ndarray) -> bytes:
    return encode(rgb, ".tiff")


def test_accepted_types_are_classified(tech_svc):
    client, svc = tech_svc
    rgb = smear(7, 128)
    s = svc.store.open_sample("UP-1", "", "tech")
    files = [("a.jpg", encode(rgb, ".jpg")), ("b.png", encode(rgb, ".png")), ("c.bmp", encode(rgb, ".bmp")),
             ("d.tif", _tiff(rgb))]  # fmt: skip
    r = _post(client, files, s["id"])
    assert r.status_code == 200, r.get_json()
    out = r.get_json()["results"]
    assert [o["file"] for o in out] == ["a.jpg", "b.png", "c.bmp", "d.tif"]
    assert [o["format"] for o in out] == ["JPEG", "PNG", "BMP", "TIFF"]
    for o in out:
        assert set(o["probabilities"]) == {"Benign", "Early", "Pre", "Pro"}
        assert o["id"] and isinstance(o["abstained"], bool) and o["label"] in o["probabilities"]
        assert o["sample_id"] == s["id"] and o["source"] == "upload"
    assert _state(svc)[0] == 4


def test_upload_page_form(tech_svc):
    client, svc = tech_svc
    r = _post(client, [("x.png", encode(smear(1)))], api=False)
    assert r.status_code == 200 and 'id="upload-results"' in r.get_data(as_text=True)
    r = _post(client, [("x.txt", b"hello, not an image")], api=False)
    assert r.status_code == 415 and "Nothing was stored" in r.get_data(as_text=True)


def _png_with_size(w: int, h: int) -> bytes:
    """A valid small PNG whose IHDR claims w x h (CRC fixed): a decompression-bomb header."""
    data = bytearray(encode(smear(0, 16), ".png"))
    data[16:24] = struct.pack(">II", w, h)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _jpeg_with_size(w: int, h: int) -> bytes:
    data = bytearray(encode(smear(0, 16), ".jpg"))
    i = 2
    while True:
        marker, length = data[i + 1], struct.unpack(">H", data[i + 2 : i + 4])[0]
        if marker == 0xC0:
            data[i + 5 : i + 9] = struct.pack(">HH", h, w)
            return bytes(data)
        i += 2 + length


GOOD = encode(smear(9, 64), ".jpg")
BAD = [
    ("notes.txt", b"this is a text file, not an image\n" * 10, 415, "not an image"),
    ("anim.gif", b"GIF89a" + b"\x00" * 100, 415, "GIF"),
    ("empty.png", b"", 400, "empty"),
    ("cut.jpg", GOOD[: len(GOOD) // 2], 422, "truncated"),
    ("cut.png", encode(smear(9, 64), ".png")[:300], 422, "truncated"),
    ("cut.bmp", encode(smear(9, 64), ".bmp")[:2000], 422, "truncated"),
    ("cut.tif", encode(smear(9, 256), ".tiff")[:5000], 422, "truncated"),
    ("huge.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * (20 * 10**6 + 10), 413, "MB"),
    ("bomb.png", _png_with_size(10_000, 10_000), 413, "megapixels"),
    ("bomb.jpg", _jpeg_with_size(9_000, 6_000), 413, "megapixels"),
    ("../../etc/x.png", encode(smear(1)), 400, "path"),
    ("C:\\temp\\x.png", encode(smear(1)), 400, "path"),
    ("sub/x.png", encode(smear(1)), 400, "path"),
]


@pytest.mark.parametrize(("name", "data", "status", "words"), BAD, ids=[b[0] for b in BAD])
def test_bad_upload_rejected_and_nothing_stored(tech_svc, name, data, status, words):
    client, svc = tech_svc
    before = _state(svc)
    r = _post(client, [(name, data)])
    assert r.status_code == status, r.get_json()
    assert words in r.get_json()["error"]
    assert _state(svc) == before
    assert svc.uploads._value.get() == 0  # the classifier was never called


def test_one_bad_file_refuses_the_whole_upload(tech_svc):
    client, svc = tech_svc
    before = _state(svc)
    r = _post(client, [("good.png", encode(smear(1))), ("bad.txt", b"nope nope nope")])
    assert r.status_code == 415 and _state(svc) == before


def test_unknown_or_finished_sample(tech_svc):
    client, svc = tech_svc
    before = _state(svc)
    assert _post(client, [("a.png", encode(smear(1)))], sample="no-such-sample").status_code == 404
    s = svc.store.open_sample("DONE", "", "tech")
    svc.store.finish_sample(s["id"])
    r = _post(client, [("a.png", encode(smear(1)))], sample=s["id"])
    assert r.status_code == 409 and "finished" in r.get_json()["error"]
    assert _state(svc) == before


def test_no_file(tech_svc):
    client, _ = tech_svc
    r = client.post("/api/v1/classify", data={}, headers={"X-CSRF-Token": token_of(client)})
    assert r.status_code == 400 and "no file" in r.get_json()["error"]


def test_check_upload_units():
    with pytest.raises(UploadRejected) as e:
        check_upload("x.png", _png_with_size(8000, 7000), max_bytes=10**7)
    assert e.value.status == 413
    ok = check_upload("x.png", encode(smear(1, 40)), max_bytes=10**7)
    assert ok.rgb.shape == (40, 40, 3) and (ok.width, ok.height) == (40, 40)
    with pytest.raises(UploadRejected):
        check_upload(".hidden.png", encode(smear(1)), max_bytes=10**7)


def test_scale_choice_is_passed_on_and_a_bad_one_refused(tech_svc):
    client, svc = tech_svc
    jpg = encode(smear(), ".jpg")
    headers = {"X-CSRF-Token": token_of(client)}
    for sent, got in (("auto", "auto"), ("0.25", 0.25), ("", "profile"), ("model", None)):
        data = {"file": [(io.BytesIO(jpg), "a.jpg")], "um_per_px": sent}
        r = client.post("/api/v1/classify", data=data, content_type="multipart/form-data", headers=headers)
        assert r.status_code == 200 and svc.last_um_per_px == got
    before = _state(svc)
    data = {"file": [(io.BytesIO(jpg), "a.jpg")], "um_per_px": "big"}
    r = client.post("/api/v1/classify", data=data, content_type="multipart/form-data", headers=headers)
    assert r.status_code == 400 and "um_per_px" in r.get_json()["error"] and _state(svc) == before
    page = client.get("/upload").get_data(as_text=True)
    assert 'name="um_per_px" value="auto"' in page and "scale unknown" in page
