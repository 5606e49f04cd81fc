"""`smearscope-hub export-dataset --cells` and the dashboard's cells zip: reviewed cells as square crops
at the record's µm/px, by reviewed label, with labels.json (whose blast flags come from the published
bundles the records name, or the export's options) and a manifest `smearscope train` reads."""

from __future__ import annotations

import hashlib
import io
import json
import uuid
import zipfile
from datetime import UTC, datetime

import cv2
import numpy as np
import pytest
from hubkit import Hub
from test_hub_cells import cell, frame_jpeg, post, record

from device.datasets.labels import read_labels
from hub.app import HubSettings
from hub.cli import main as hub_main
from hub.fleet.tables import BundleBlob, PublishedBundle

MODEL_SHA = "c" * 64


def publish_manifest(hub: Hub, labels: list[dict]) -> None:
    """A published cell bundle as the hub stores it (only its manifest matters here)."""
    manifest = {
        "name": "cellnet",
        "sha256": MODEL_SHA,
        "labels": labels,
        "input": {"width": 96, "height": 96, "um_per_px": 0.25},
        "cells": {"pitch_um": 0.479},
    }
    data = json.dumps(manifest).encode()
    sha = hashlib.sha256(data).hexdigest()
    now = datetime.now(UTC)
    with hub.sessions() as s:
        s.add(BundleBlob(sha256=sha, size=len(data), data=data, created_at=now))
        files = [{"path": "manifest.json", "sha256": sha, "size": len(data)}]
        s.add(
            PublishedBundle(
                name="cellnet",
                key_id="k" * 32,
                signature_sha256="d" * 64,
                files_json=json.dumps(files),
                published_at=now,
            )
        )
        s.commit()


class CellHub:
    def __init__(self, tmp_path):
        self.url = f"sqlite:///{tmp_path / 'hub.db'}"
        self.hub = Hub(self.url, HubSettings(max_body_mb=2))
        self.jpeg = frame_jpeg()
        self.image = cv2.imdecode(np.frombuffer(self.jpeg, np.uint8), cv2.IMREAD_COLOR)
        sha = hashlib.sha256(self.jpeg).hexdigest()
        c = self.hub.client()
        assert c.put(f"/api/v1/images/{sha}", data=self.jpeg, headers=self.hub.dev()).status_code == 201
        self.sample = str(uuid.uuid4())
        seen = {"reviewer": "ana", "reviewed_at": "2026-11-22T02:00:00Z"}
        models = [{"name": "cellnet", "sha256": MODEL_SHA}]
        self.rec = record(
            sample_id=self.sample,
            image_sha256=sha,
            um_per_px=0.25,
            models=models,
            cells=[
                cell(0, box=[10, 20, 40, 50], x=25.5, y=35.5, reviewed_label="lymphocyte", **seen),
                cell(
                    1, box=[60, 20, 90, 50], x=75.5, y=35.5, state="blast", reviewed_label="blast_pre", **seen
                ),
                cell(2, box=[100, 20, 130, 50], x=115.0, y=35.0, reviewed_label="not_a_cell", **seen),
                cell(3, box=[120, 80, 150, 110], x=135.0, y=95.0),
                cell(4, box=[0, 0, 8, 8], x=2.5, y=2.5, reviewed_label="lymphocyte", **seen),
                cell(5, box=[50, 70, 80, 100], x=65.5, y=85.5, reviewed_label="mystery", **seen),
            ],
        )
        self.unscaled = record(
            seq=2,
            image_sha256=sha,
            um_per_px=None,
            models=models,
            cells=[cell(0, reviewed_label="lymphocyte", **seen)],
        )
        assert post(self.hub, [self.rec, self.unscaled]).get_json()["counts"]["accepted"] == 2
        publish_manifest(
            self.hub,
            [
                {"id": "blast_pre", "display": "Blast (pre-B ALL)", "malignant": True},
                {"id": "lymphocyte", "display": "Lymphocyte", "malignant": False},
            ],
        )

    def export(self, out, *args: str) -> dict:
        assert hub_main(["--db", self.url, "export-dataset", "--cells", "--out", str(out), *args]) == 0
        return json.loads((out / "manifest.json").read_text())


@pytest.fixture
def cells_hub(tmp_path):
    return CellHub(tmp_path)


def png(path) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_COLOR)


def test_cells_export_writes_crops_of_the_right_region_with_labels_and_manifest(cells_hub, tmp_path):
    out = tmp_path / "cells"
    doc = cells_hub.export(out, "--cell-side-um", "10")  # 10 µm at 0.25 µm/px: 40 px squares
    rid = cells_hub.rec["id"]
    by_path = {e["path"]: e for e in doc["images"]}
    assert sorted(by_path) == [f"blast_pre/{rid}.1.png", f"lymphocyte/{rid}.0.png", f"lymphocyte/{rid}.4.png"]
    assert (
        doc["kind"] == "cells"
        and doc["format"] == "smearscope-dataset"
        and "not a diagnosis" in doc["disclaimer"]
    )
    assert doc["counts"]["skipped"] == {
        "label's blast status unknown (--blast-label / --normal-label)": 1,
        "not reviewed": 1,
        "record's µm/px unknown": 1,
        "reviewed as not a cell": 1,
    }
    img = cells_hub.image
    first = by_path[f"lymphocyte/{rid}.0.png"]
    assert first["crop_box"] == [6, 16, 46, 56] and first["side_px"] == 40 and first["reflected"] is False
    assert np.array_equal(png(out / first["path"]), img[16:56, 6:46])
    assert np.array_equal(png(out / f"blast_pre/{rid}.1.png"), img[16:56, 56:96])
    edge = by_path[f"lymphocyte/{rid}.4.png"]
    assert edge["reflected"] is True and edge["crop_box"] == [-17, -17, 23, 23]
    crop = png(out / edge["path"])
    assert crop.shape == (40, 40, 3) and np.array_equal(crop[17:, 17:], img[0:23, 0:23])
    assert np.array_equal(crop[16, 17:], img[1, 0:23])  # reflected about row 0 (BORDER_REFLECT_101)
    for e in doc["images"]:
        assert hashlib.sha256((out / e["path"]).read_bytes()).hexdigest() == e["image_sha256"]
        assert e["group"] == cells_hub.sample and e["device"] == "scope-1" and e["reviewer"] == "ana"
    labels = read_labels(out)
    assert {k: (v.malignant, v.display) for k, v in labels.items()} == {
        "blast_pre": (True, "Blast (pre-B ALL)"),
        "lymphocyte": (False, "Lymphocyte"),
    }
    assert doc["counts"]["blasts"] == 1 and doc["counts"]["reflected"] == 1
    assert (out / "manifest.csv").read_text().count("\n") == 4


def test_the_exports_options_declare_labels_and_win_over_the_bundles(cells_hub, tmp_path):
    out = tmp_path / "cells"
    doc = cells_hub.export(out, "--normal-label", "mystery", "--blast-label", "lymphocyte")
    labels = read_labels(out)
    assert labels["mystery"].malignant is False and labels["mystery"].source == "--normal-label"
    assert labels["lymphocyte"].malignant is True and labels["blast_pre"].malignant is True
    assert doc["counts"]["per_label"] == {"blast_pre": 1, "lymphocyte": 2, "mystery": 1}
    side = round(24 / 0.25)  # the default side
    assert {e["side_px"] for e in doc["images"]} == {side}
    assert all(png(out / e["path"]).shape == (side, side, 3) for e in doc["images"])
    assert (
        hub_main(
            [
                "--db",
                cells_hub.url,
                "export-dataset",
                "--cells",
                "--out",
                str(tmp_path / "x"),
                "--include-unreviewed",
            ]
        )
        == 1
    )
    both = ["--blast-label", "a", "--normal-label", "a"]
    assert (
        hub_main(["--db", cells_hub.url, "export-dataset", "--cells", "--out", str(tmp_path / "x"), *both])
        == 1
    )
    assert not (tmp_path / "x").exists()


def test_smearscope_train_reads_the_cells_export_with_its_groups(cells_hub, tmp_path):
    from training.sources import scan_sources

    out = tmp_path / "cells"
    cells_hub.export(out)
    items, labels, _ = scan_sources([out])
    assert sorted(labels) == ["blast_pre", "lymphocyte"] and len(items) == 3
    assert {it.group for it in items} == {f"cells:{cells_hub.sample}"}


def test_the_dashboard_cells_zip_matches_the_cli_export(cells_hub, tmp_path):
    out = tmp_path / "cells"
    cells_hub.export(out, "--cell-side-um", "10")
    assert hub_main(["--db", cells_hub.url, "users", "admin", "reader"]) == 0
    c = cells_hub.hub.client()
    c.post("/login", data={"token": cells_hub.hub.user_token})
    page = c.get("/export/dataset?cells=1&cell_side_um=10").get_data(as_text=True)
    assert "3 cells" in page and "2 labels" in page
    r = c.get("/export/dataset.zip?cells=1&cell_side_um=10")
    assert r.status_code == 200 and r.mimetype == "application/zip"
    with zipfile.ZipFile(io.BytesIO(r.data)) as zf:
        root = zf.namelist()[0].split("/")[0]
        assert root.startswith("smearscope-cells-")
        files = {n[len(root) + 1 :]: zf.read(n) for n in zf.namelist()}
    on_disk = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert set(files) == set(on_disk)
    assert all(files[k] == on_disk[k] for k in files if k.endswith(".png") or k == "labels.json")
    assert c.get("/export/dataset.zip?cells=1&cell_side_um=0").status_code == 400


def test_a_records_own_differential_declares_its_labels_first(cells_hub, tmp_path):
    seen = {"reviewer": "bo", "reviewed_at": "2026-11-22T03:00:00Z"}
    declared = {
        "counts": [{"id": "mystery", "display": "Mystery blast", "blast": True, "n": 1}],
        "others": [
            {"id": "lymphocyte", "display": "Lymphocyte (as this bundle says)", "blast": True, "n": 0}
        ],
    }
    rec = record(
        seq=3,
        sample_id=cells_hub.sample,
        image_sha256=cells_hub.rec["image_sha256"],
        um_per_px=0.25,
        quality={"ok": True, "differential": declared},
        cells=[cell(0, x=80.0, y=60.0, reviewed_label="mystery", **seen)],
    )
    assert post(cells_hub.hub, [rec]).get_json()["counts"]["accepted"] == 1
    doc = cells_hub.export(tmp_path / "cells")
    labels = read_labels(tmp_path / "cells")
    assert labels["mystery"].malignant is True and labels["mystery"].display == "Mystery blast"
    assert labels["mystery"].source == "the record's differential"
    # the first record's 'mystery' cell has no declaration of its own: the label is one class, declared once
    assert doc["counts"]["per_label"]["mystery"] == 2
    # lymphocyte: the first record names the published bundle (not a blast); the new record has no such cell
    assert labels["lymphocyte"].malignant is False


def test_a_stored_image_that_does_not_decode_leaves_its_cells_out(cells_hub, tmp_path):
    junk = b"\xff\xd8 not really a jpeg"
    sha = hashlib.sha256(junk).hexdigest()
    hub = cells_hub.hub
    assert hub.client().put(f"/api/v1/images/{sha}", data=junk, headers=hub.dev()).status_code == 201
    seen = {"reviewer": "bo", "reviewed_at": "2026-11-22T03:00:00Z"}
    rec = record(seq=4, image_sha256=sha, um_per_px=0.25, cells=[cell(0, reviewed_label="blast_pre", **seen)])
    assert post(hub, [rec]).get_json()["counts"]["accepted"] == 1
    doc = cells_hub.export(tmp_path / "cells", "--device", "scope-1")
    assert doc["counts"]["skipped"]["stored image does not decode"] == 1
    assert doc["counts"]["per_label"] == {"blast_pre": 1, "lymphocyte": 2}
    assert not any(e["record_id"] == rec["id"] for e in doc["images"])
