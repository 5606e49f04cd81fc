"""Upload checks the probe broke (issue 13, items 4 and 9): trailing bytes, a cut JPEG with an end
marker appended, NaN TIFFs, bidi file names, the 413 message, and decoding bounded in pixels and in
concurrency."""

from __future__ import annotations

import io
import threading

import cv2
import numpy as np
import pytest

from device.web.classify import decode_slot
from device.web.upload_check import UploadRejected, check_upload, decode_bounded
from tests.webkit import login, make_app, token_of


def _photo(h: int = 480, w: int = 640, seed: int = 0) -> np.ndarray:
    """A textured field (no flat mid-grey anywhere), as a camera would give."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), (200, 170, 210), np.uint8)
    for _ in range(300):
        x, y = rng.integers(0, w), rng.integers(0, h)
        colour = tuple(int(v) for v in rng.integers(40, 230, 3))
        cv2.circle(img, (int(x), int(y)), int(rng.integers(4, 25)), colour, -1)
    return cv2.GaussianBlur(img, (5, 5), 0)


def _jpeg(img: np.ndarray, **kw) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90, *sum(kw.items(), ())])
    assert ok
    return buf.tobytes()


JPEG = _jpeg(_photo())
LIMIT = 10**7


def test_valid_jpeg_with_trailing_bytes_is_accepted():
    data = JPEG + b"\x00camera-vendor-trailer" * 20  # > 64 bytes after the end marker
    ok = check_upload("x.jpg", data, max_bytes=LIMIT)
    assert ok.rgb.shape == (480, 640, 3)


@pytest.mark.parametrize("frac", [0.3, 0.7, 0.97])
def test_truncated_jpeg_with_end_marker_appended_is_refused(frac):
    data = JPEG[: int(len(JPEG) * frac)] + b"\xff\xd9"
    with pytest.raises(UploadRejected) as e:
        check_upload("cut.jpg", data, max_bytes=LIMIT)
    assert e.value.status == 422 and "truncated" in e.value.message


def test_non_finite_float_tiff_is_refused():
    for fill in (np.nan, np.inf):
        img = np.full((64, 64), fill, np.float32)
        ok, buf = cv2.imencode(".tiff", img)
        assert ok
        with pytest.raises(UploadRejected) as e:
            check_upload("nan.tif", buf.tobytes(), max_bytes=LIMIT)
        assert e.value.status == 422 and "NaN" in e.value.message


@pytest.mark.parametrize("name", ["smear\u202egpj.exe", "a\u200bb.jpg", "x\u2066.jpg", "tab\tname.jpg"])
def test_bidi_and_control_characters_in_file_names_are_refused(name):
    with pytest.raises(UploadRejected) as e:
        check_upload(name, JPEG, max_bytes=LIMIT)
    assert e.value.status == 400
    assert "\u202e" not in e.value.message  # the message itself is safe to show


def test_413_names_the_real_file_size(tmp_path):
    app, _ = make_app(tmp_path, max_upload_mb=1)
    client = app.test_client()
    login(client)
    big = JPEG + b"\x00" * 3_500_000  # 3.5+ MB; only the first 1 MB + 1 byte is ever read in
    r = client.post(
        "/api/v1/classify",
        data={"file": (io.BytesIO(big), "big.jpg")},
        content_type="multipart/form-data",
        headers={"X-CSRF-Token": token_of(client)},
    )
    assert r.status_code == 413
    msg = r.get_json()["error"]
    assert f"{len(big) / 1e6:.1f} MB" in msg and "1 MB per-file" in msg
    too_big = b"\x00" * 11_500_000  # over the request limit (10 files x 1 MB + 1 MB)
    r = client.post(
        "/api/v1/classify",
        data={"file": (io.BytesIO(too_big), "x.jpg")},
        content_type="multipart/form-data",
        headers={"X-CSRF-Token": token_of(client)},
    )
    assert r.status_code == 413
    msg = r.get_json()["error"]
    assert "11 MB" in msg or "11.5 MB" in msg
    assert "at most 11 MB in all" in msg and "each file at most 1 MB" in msg


def test_large_jpeg_is_decoded_reduced_and_other_formats_refused():
    img = _photo(2400, 3200)  # 7.7 MP
    cap = 2_000_000
    rgb = decode_bounded(_jpeg(img), "JPEG", 3200, 2400, max_pixels=cap)
    assert rgb.shape[0] * rgb.shape[1] <= cap and rgb.shape[:2] == (1200, 1600)  # 1/2 scale
    ok, png = cv2.imencode(".png", img)
    with pytest.raises(UploadRejected) as e:
        check_upload("big.png", png.tobytes(), max_bytes=10**8, max_decode_pixels=cap)
    assert e.value.status == 413 and "MP this station decodes" in e.value.message


def test_decode_slots_bound_concurrency():
    slots = threading.BoundedSemaphore(1)
    with decode_slot(slots), pytest.raises(UploadRejected) as e, decode_slot(slots, wait_s=0.05):
        pass
    assert e.value.status == 503
    with decode_slot(slots):  # released again
        pass
