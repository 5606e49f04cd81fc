"""Names the hub turns into folders or uses to tell stations apart (hub/names.py): export labels fold
case-insensitively into one class; reserved and unsafe labels are skipped; device names follow the
same rule."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from hubkit import Hub, jpeg
from test_hub_api import record

from hub import names, tokens
from hub.cli import main as hub_main


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".",
        "..",
        "CON",
        "con",
        "Con.txt",
        "aux.jpg",
        "NUL",
        "prn.tar.gz",
        "COM1",
        "com9",
        "LPT1",
        "lpt9.x",
        "COM¹",
        "CON .txt",
        "a/b",
        "..\\x",
        "../../etc",
        "x\x00",
        "x\x1b[0m",
        "x\u202eevil",
        "zero\u200bwidth",
        " x",
        "x ",
        ".hidden",
        "trailing.",
        "a:b",
        'a"b',
        "a|b",
        "a?b",
        "a*b",
        "x" * 101,
    ],
)
def test_unsafe_names_are_refused(name):
    assert names.problem(name) is not None
    with pytest.raises(ValueError, match="device name"):
        names.check(name, "device name")


@pytest.mark.parametrize(
    "name", ["Benign", "Early Pre-B", "pre_b.2", "CONSOLE", "COM10", "LPT", "auxiliary", "Bénin", "x" * 100]
)
def test_plain_names_pass(name):
    assert names.problem(name) is None


def test_fold_ignores_case_and_unicode_form():
    assert names.fold("Benign") == names.fold("BENIGN") == names.fold("benign")
    assert names.fold("Be\u0301nin") == names.fold("Bénin")  # decomposed é == composed é


def test_export_folds_labels_and_skips_reserved_ones(tmp_path):
    """`benign` and `Benign` are one class under the spelling most images carry; a tie goes to the first
    spelling in code-point order; CON, aux.jpg and a trailing dot never become folders."""
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    hub = Hub(url)
    c = hub.client()
    rng = np.random.default_rng(3)
    labels = ["Benign", "Benign", "benign", "Pre", "PRE", "CON", "aux.jpg", "Pro.", "lpt1"]
    recs = []
    for i, label in enumerate(labels):
        data = jpeg(rng)
        sha = hashlib.sha256(data).hexdigest()
        assert c.put(f"/api/v1/images/{sha}", data=data, headers=hub.dev()).status_code == 201
        recs.append(record(seq=i + 1, sample_id=None, label=label, image_sha256=sha))
    r = c.post("/api/v1/results", json={"records": recs}, headers=hub.dev())
    assert r.get_json()["counts"]["accepted"] == len(labels), r.get_json()

    out = tmp_path / "export"
    assert hub_main(["--db", url, "export-dataset", "--out", str(out), "--include-unreviewed"]) == 0
    doc = json.loads((out / "manifest.json").read_text())
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["Benign", "PRE"]
    assert len(list((out / "Benign").iterdir())) == 3 and len(list((out / "PRE").iterdir())) == 2
    assert doc["labels"] == ["Benign", "PRE"]
    assert doc["counts"]["per_label"] == {"Benign": 3, "PRE": 2}
    assert doc["counts"]["skipped"] == {"label not usable as a folder name": 4}
    assert doc["label_spellings"] == {"Benign": ["Benign", "benign"], "PRE": ["PRE", "Pre"]}
    assert "ignoring case" in doc["label_fold_rule"]
    by_model = sorted((e["model_label"], e["label"], e["path"].split("/")[0]) for e in doc["images"])
    assert ("benign", "Benign", "Benign") in by_model and ("Pre", "PRE", "PRE") in by_model


def test_device_names_are_checked_like_labels(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    hub = Hub(url)  # registers "scope-1"
    with hub.sessions() as s:
        for bad in ("../../etc", "CON", "com1.local", "a/b", "x\u202e", "trailing."):
            with pytest.raises(ValueError, match="device name"):
                tokens.add_device(s, bad)
        with pytest.raises(ValueError, match="ignoring case"):
            tokens.add_device(s, "SCOPE-1")
        assert tokens.add_device(s, "  scope-2  ")  # surrounding spaces are trimmed, not refused
    assert hub_main(["--db", url, "devices", "add", "../../etc"]) == 1
    assert "device name '../../etc': must not contain a path separator" in capsys.readouterr().err
