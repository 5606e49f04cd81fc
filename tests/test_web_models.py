"""Models page (bundles, hash check, model card) and the safe Markdown renderer."""

from __future__ import annotations

import pytest
from webkit import login, make_app

from device.web.markdown import render


def test_markdown_is_safe_and_useful():
    html = render(
        "# Card\n\n<script>alert(1)</script> **bold** `x<y`\n\n| a | b |\n|---|---|\n| 1 | <img src=x> |\n\n"
        "- one\n- two\n\n[link](javascript:alert(1))\n\n```\n<b>code</b>\n```"
    )
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<img" not in html and "<a " not in html
    assert "<h2>Card</h2>" in html and "<strong>bold</strong>" in html and "<code>x&lt;y</code>" in html
    assert "<table" in html and "<li>two</li>" in html and "&lt;b&gt;code&lt;/b&gt;" in html


@pytest.fixture
def models_client(tmp_path, tiny_bundle, monkeypatch):
    monkeypatch.setenv("SMEARSCOPE_MODELS_DIR", str(tmp_path / "no-models"))
    import json

    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    cm = [[5, 1, 0, 0], [0, 6, 0, 0], [0, 0, 7, 1], [0, 0, 0, 8]]
    manifest["metrics"].update(confusion_matrix=cm, n=28)
    (tiny_bundle / "manifest.json").write_text(json.dumps(manifest))
    (tiny_bundle / "report").mkdir(exist_ok=True)
    (tiny_bundle / "report" / "confusion_matrix.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    app, svc = make_app(tmp_path)
    app.extensions["smearscope"].config.classifier.models = [str(tiny_bundle)]
    c = app.test_client()
    login(c)
    return c, tiny_bundle


def test_models_page_shows_bundle_card_and_hash_state(models_client):
    c, bundle = models_client
    html = c.get("/models").get_data(as_text=True)
    assert "in the ensemble" in html and "model file matches its manifest" in html
    assert "Model card" in html and "confusion_matrix.png" in html
    assert "accuracy 0.979" in html and "(n=28)" in html and "Confusion matrix" in html
    assert c.get(f"/models/{bundle.name}/report/confusion_matrix.png").status_code == 200
    assert c.get(f"/models/{bundle.name}/manifest.json").status_code == 404  # images only
    assert c.get(f"/models/{bundle.name}/../../etc/passwd.png").status_code == 404
    with open(bundle / "model.tflite", "ab") as f:
        f.write(b"tampered")
    html = c.get("/models").get_data(as_text=True)
    assert "MISMATCH" in html
