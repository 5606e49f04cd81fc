"""/metrics on the device: process and build metrics, model info, and abstentions/refusals counted by
a fixed set of reason categories (device/telemetry.py, device/reason_categories.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from prometheus_client import generate_latest

from device import __version__
from device.config import load_config
from device.models.ensemble import Prediction
from device.optics.field import combine
from device.reason_categories import (
    ABSTENTION_REASONS,
    REFUSAL_REASONS,
    abstention_category,
    refusal_category,
)
from device.services import Services
from device.telemetry import ModelInfo, Telemetry

LABELS = ["Benign", "Pre"]
MALIGNANT = {"Pre"}


def value(tel: Telemetry, metric: str, **labels: str) -> float | None:
    return tel.registry.get_sample_value(metric, labels)


def test_process_platform_and_build_metrics_are_exposed():
    tel = Telemetry(commit="abc123")
    text = generate_latest(tel.registry).decode()
    for name in ("process_resident_memory_bytes", "process_cpu_seconds_total", "python_info"):
        assert f"\n{name}" in text, name
    assert value(tel, "process_resident_memory_bytes") > 0
    build = {"version": __version__, "commit": "abc123"}
    assert any(
        s.name == "smearscope_build_info" and build.items() <= s.labels.items()
        for m in tel.registry.collect()
        for s in m.samples
    )


def test_model_info_is_replaced_on_reload():
    tel = Telemetry(commit="x")
    tel.set_models(
        [ModelInfo("a", "0123456789abcdef" * 4, "fedcba9876543210ffff"), ModelInfo("b", "9" * 64, None)]
    )
    assert (
        value(tel, "smearscope_model_info", name="a", sha256="0123456789ab", key_id="fedcba9876543210") == 1
    )
    assert value(tel, "smearscope_model_info", name="b", sha256="999999999999", key_id="unsigned") == 1
    tel.set_models([ModelInfo("c", "1" * 64, "k")])
    assert (
        value(tel, "smearscope_model_info", name="a", sha256="0123456789ab", key_id="fedcba9876543210")
        is None
    )
    assert value(tel, "smearscope_model_info", name="c", sha256="111111111111", key_id="k") == 1


def test_counters_start_at_zero_and_keep_to_their_categories():
    tel = Telemetry(commit="x")
    for reason in ABSTENTION_REASONS:
        assert value(tel, "smearscope_abstentions_total", reason=reason, source="camera") == 0
    for reason in REFUSAL_REASONS:
        assert value(tel, "smearscope_refusals_total", reason=reason, source="upload") == 0
    tel.abstained("low_confidence", "camera")
    tel.abstained("confidence 0.41 below threshold 0.60", "camera")  # free text never becomes a label
    tel.refused("scale_mismatch", "upload")
    tel.field_outcome("uncertain", "camera")
    assert value(tel, "smearscope_abstentions_total", reason="low_confidence", source="camera") == 1
    assert value(tel, "smearscope_abstentions_total", reason="other", source="camera") == 1
    assert value(tel, "smearscope_refusals_total", reason="scale_mismatch", source="upload") == 1
    assert value(tel, "smearscope_fields_total", state="uncertain", source="camera") == 1
    series = {
        s.labels["reason"]
        for m in tel.registry.collect()
        if m.name == "smearscope_abstentions"
        for s in m.samples
    }
    assert series == set(ABSTENTION_REASONS)


def _pred(label: str, conf: float, abstained: bool = False, reason: str | None = None) -> Prediction:
    other = next(lb for lb in LABELS if lb != label)
    return Prediction(LABELS, {label: conf, other: 1 - conf}, label, conf, abstained, reason)


LOW = "confidence 0.41 below threshold 0.60"
UNFAMILIAR = "input unlike the training images (m: colour unlike the training images, distance 9.1 > 4.0)"


@pytest.mark.parametrize(
    ("tiles", "category"),
    [
        ([_pred("Benign", 0.9), _pred("Pre", 0.9)], "tiles_disagree"),
        ([_pred("Benign", 0.9), _pred("Pre", 0.5, True, LOW)], "doubtful_leans_malignant"),
        ([_pred("Benign", 0.5, True, LOW)], "low_confidence"),
        ([_pred("Benign", 0.5, True, UNFAMILIAR), _pred("Pre", 0.5, True, UNFAMILIAR),
          _pred("Benign", 0.5, True, LOW)], "unfamiliar_input"),
        ([_pred("Benign", 0.5, True, "models disagree")], "models_disagree"),
    ],
)  # fmt: skip
def test_the_field_rules_reasons_map_to_their_category(tiles, category):
    field = combine(tiles, LABELS, MALIGNANT)
    assert field.state == "uncertain"
    assert abstention_category(field.reason) == category


def test_the_ensembles_reason_texts_are_the_ones_categorised():
    """The ensemble writes these sentences; a reworded one must be re-mapped, not fall into 'other'."""
    src = (Path(__file__).resolve().parents[1] / "device" / "models" / "ensemble.py").read_text()
    assert '"input unlike the training images (' in src
    assert 'f"confidence {conf:.2f} below threshold' in src
    assert '"models disagree"' in src
    assert abstention_category("image quality: out of focus") == "image_quality"
    assert abstention_category(None) == "other"


def test_refusal_category_reads_the_prepared_frame():
    ok_check = SimpleNamespace(ran=True, ok=True)
    bad_check = SimpleNamespace(ran=True, ok=False)
    assert refusal_category(SimpleNamespace(plan=None, check=ok_check)) == "scale_unknown"
    assert (
        refusal_category(SimpleNamespace(plan=SimpleNamespace(refused="too big"), check=ok_check))
        == "image_size"
    )
    assert (
        refusal_category(SimpleNamespace(plan=SimpleNamespace(refused=None), check=bad_check))
        == "scale_mismatch"
    )
    assert refusal_category(SimpleNamespace(plan=SimpleNamespace(refused=None), check=ok_check)) == "other"


def _config(tmp_path, bundle, frames_dir):
    over = {
        "classifier": {"models": [str(bundle)], "threads": 1},
        "camera": {"path": str(frames_dir), "fps": 40.0},
        "store": {"every_s": 3600.0, "on_label_change": False, "reserve_mb": 0},
    }
    return load_config(data_dir=tmp_path / "data", overrides=over, system_config=None, env={})


def _total(tel: Telemetry, name: str, key: str, values, source: str) -> float:
    return sum(value(tel, name, **{key: v, "source": source}) or 0 for v in values)


def test_services_count_uploads_camera_fields_and_models(tmp_path, tiny_bundle, sample_images):
    s = Services(_config(tmp_path, tiny_bundle, sample_images[0].parent))
    tel = s.telemetry
    try:
        key_id = json.loads((tiny_bundle / "signature.json").read_text())["key_id"]
        sha = s.ensemble.models[0].manifest.sha256
        name = s.ensemble.models[0].manifest.name
        assert value(tel, "smearscope_model_info", name=name, sha256=sha[:12], key_id=key_id[:16]) == 1
        assert value(tel, "smearscope_model_signatures_ok") == 1

        states = ("classified", "uncertain", "no_cells", "refused")
        rgb = cv2.cvtColor(cv2.imread(str(sample_images[2])), cv2.COLOR_BGR2RGB)
        rec = s.classify_upload(rgb, filename="a.jpg")
        assert _total(tel, "smearscope_fields_total", "state", states, "upload") == 1
        abstentions = _total(tel, "smearscope_abstentions_total", "reason", ABSTENTION_REASONS, "upload")
        uncertain = value(tel, "smearscope_fields_total", state="uncertain", source="upload")
        called = rec["field"]["state"] in ("classified", "uncertain")  # not no_cells / refused
        assert abstentions == uncertain == (1 if rec["abstained"] and called else 0)
        # a blank image fails the quality gate (no contrast): classified, marked uncertain for quality
        before = value(tel, "smearscope_abstentions_total", reason="image_quality", source="upload")
        rec = s.classify_upload(np.full((96, 96, 3), 200, np.uint8), filename="blank.png")
        assert rec["abstained"] and rec["reason"].startswith("image quality:")
        assert (
            value(tel, "smearscope_abstentions_total", reason="image_quality", source="upload") == before + 1
        )
        assert _total(tel, "smearscope_fields_total", "state", states, "upload") == 2

        s.start()
        end = time.monotonic() + 20
        while (
            time.monotonic() < end and _total(tel, "smearscope_fields_total", "state", states, "camera") < 2
        ):
            time.sleep(0.05)
        assert _total(tel, "smearscope_fields_total", "state", states, "camera") >= 2
    finally:
        s.stop()
    # every uncertain field is one abstention, whatever the tiny model said
    assert _total(tel, "smearscope_abstentions_total", "reason", ABSTENTION_REASONS, "camera") == value(
        tel, "smearscope_fields_total", state="uncertain", source="camera"
    )
    text = generate_latest(tel.registry).decode()
    assert "smearscope_abstentions_total{" in text and "smearscope_refusals_total{" in text


def test_frames_failing_the_quality_gate_are_refusals(tmp_path, tiny_bundle):
    blank = tmp_path / "blank"
    blank.mkdir()
    for i in range(3):
        cv2.imwrite(str(blank / f"{i}.png"), np.full((96, 96, 3), 200 + i, np.uint8))
    s = Services(_config(tmp_path, tiny_bundle, blank))
    tel = s.telemetry
    try:
        s.start()
        end = time.monotonic() + 20
        while (
            time.monotonic() < end
            and (value(tel, "smearscope_refusals_total", reason="quality", source="camera") or 0) < 3
        ):
            time.sleep(0.05)
    finally:
        s.stop()
    assert value(tel, "smearscope_refusals_total", reason="quality", source="camera") >= 3
    # a frame refused by the gate is no field: nothing classified, nothing abstained
    states = ("classified", "uncertain", "no_cells", "refused")
    assert _total(tel, "smearscope_fields_total", "state", states, "camera") == 0
    assert _total(tel, "smearscope_abstentions_total", "reason", ABSTENTION_REASONS, "camera") == 0
