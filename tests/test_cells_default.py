"""The station's default run with a cell ensemble: models/DEFAULT naming cell bundles, the embedded
defaults (replay camera over the shipped samples, SQLite) — the replay source declares the samples'
µm/px, so their white cells are detected, classified and stored as records of kind "cells"."""

from __future__ import annotations

import pytest
from make_tiny_bundle import make_cell_bundle
from test_pipeline import services_factory, wait_for  # noqa: F401 - fixture

from device.camera import declared_scale
from device.camera.virtual import SAMPLES_UM_PER_PX
from device.config import load_config
from device.paths import default_bundle_dirs

NAME = "tiny-cells-int8"


@pytest.fixture
def cell_default(tmp_path, monkeypatch):
    """A models dir whose DEFAULT lists one tiny cell bundle, made the station's models dir."""
    root = tmp_path / "models"
    make_cell_bundle(root / NAME)
    (root / "DEFAULT").write_text(f"# the default ensemble\n{NAME}\n")
    monkeypatch.setenv("SMEARSCOPE_MODELS_DIR", str(root))
    return root


def default_config(tmp_path, **sections):
    over = {"classifier": {"threads": 1}, "sync": {"enabled": False}}
    for k, v in sections.items():
        over.setdefault(k, {}).update(v)
    return load_config(data_dir=tmp_path / "data", overrides=over, system_config=None, env={})


def test_replay_of_the_shipped_samples_declares_their_scale(tmp_path):
    cfg = default_config(tmp_path)
    assert cfg.camera.source == "replay" and cfg.camera.path == ""
    assert declared_scale(cfg.camera).um_per_px == SAMPLES_UM_PER_PX
    own = default_config(tmp_path, camera={"path": str(tmp_path)})
    assert declared_scale(own.camera) is None  # images of unknown scale: calibrate, or auto
    given = default_config(tmp_path, camera={"path": str(tmp_path), "source_um_per_px": 0.31})
    assert declared_scale(given.camera).um_per_px == 0.31
    virtual = default_config(tmp_path, camera={"virtual": True, "um_per_px": 0.2})
    assert declared_scale(virtual.camera).um_per_px == 0.2
    assert declared_scale(default_config(tmp_path, camera={"source": "opencv"}).camera) is None


def test_default_run_with_a_cell_default_stores_cell_records(tmp_path, cell_default, services_factory):  # noqa: F811
    assert default_bundle_dirs() == [cell_default / NAME]
    s = services_factory(default_config(tmp_path), pace=False)  # the quality gate on, as shipped
    assert [m.manifest.name for m in s.ensemble.models] == [NAME]
    assert s.pipeline.screen is not None  # the cell path
    s.start()

    def stored():
        return s.store.list_results(kind="cells", limit=5)

    assert wait_for(lambda: len(stored()) >= 1, timeout=60)
    rec = s.store.get_result(stored()[-1]["id"])
    assert rec["kind"] == "cells" and rec["source"] == "camera"
    assert rec["um_per_px"] == SAMPLES_UM_PER_PX
    assert rec["profile"] == "replay (shipped samples)"
    assert rec["quality"]["scale_source"] == "profile:replay (shipped samples)"
    whites = [c for c in rec["cells"] if c["kind"] == "white"]
    assert whites and all(len(c["box"]) == 4 for c in whites)
    assert rec["quality"]["differential"]["counted"] + rec["quality"]["differential"]["unclassified"] == len(
        whites
    )
    # the live page's JSON and the history page show it
    from webkit import PASSWORD, login

    from device.web import auth, create_app

    app = create_app(s.config, s)
    app.config["TESTING"] = True
    auth.add_user(s.store.conn, "tech", "technician", PASSWORD)
    client = app.test_client()
    assert login(client).status_code == 302

    seen: list[dict] = []

    def counted_live() -> bool:  # (the cells' own keys reach the page through the live page's whitelist)
        got = (client.get("/live/result.json").get_json() or {}).get("result") or {}
        seen.append(got)
        return got.get("state") == "counted"

    assert wait_for(counted_live, timeout=60)  # the replay loops; some samples are refused (scale)
    shown = seen[-1]
    assert shown["profile"] == "replay (shipped samples)" and shown["um_per_px"] == SAMPLES_UM_PER_PX
    assert " white cell" in shown["display"]
    history = client.get("/history").get_data(as_text=True)
    assert rec["id"] in history


def test_a_calibration_profile_wins_over_the_declared_scale(tmp_path, cell_default, services_factory):  # noqa: F811
    from device.camera.profiles import Profile

    s = services_factory(default_config(tmp_path, quality={"enabled": False}), pace=False)
    s.profiles.save(Profile("scope 40x", 0.5), activate=True)
    assert s._frame_scale().name == "scope 40x"


def test_the_field_path_keeps_no_declared_scale(tmp_path, tiny_bundle, services_factory):  # noqa: F811
    s = services_factory(default_config(tmp_path, classifier={"models": [str(tiny_bundle)]}), pace=False)
    assert s.pipeline.screen is None and s._frame_scale() is None
