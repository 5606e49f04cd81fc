"""The white reference (device.colour) and the bundle's scale/colour fields."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from device.colour import WHITE_LEVEL, apply_gains, estimate_background, normalise_background
from device.errors import BundleError
from device.models.bundle import Manifest, load_bundle
from device.preprocess import prepare, read_image

SAMPLES = sorted((Path(__file__).resolve().parents[1] / "device" / "samples").glob("*.jpg"))


@pytest.mark.parametrize("gains", [(1.0, 1.0, 0.85), (0.85, 0.95, 1.0), (0.9, 1.0, 0.8)])
def test_normalising_undoes_a_white_balance_change(gains):
    for path in SAMPLES[::4]:
        rgb = read_image(path)
        tinted = apply_gains(rgb, gains)
        raw_diff = np.abs(rgb.astype(float) - tinted).mean()
        norm_diff = np.abs(normalise_background(rgb).astype(float) - normalise_background(tinted)).mean()
        assert raw_diff > 5
        assert norm_diff < 2.0, (path.name, norm_diff)


def test_background_becomes_neutral_white():
    rgb = read_image(SAMPLES[0])
    bg = estimate_background(normalise_background(rgb))
    assert bg is not None
    assert np.all(np.abs(bg - WHITE_LEVEL) <= 3), bg


def test_no_visible_background_leaves_the_image_alone():
    dark = np.full((64, 64, 3), 20, np.uint8)
    assert estimate_background(dark) is None
    assert np.array_equal(normalise_background(dark), dark)


def test_prepare_without_white_reference_is_unchanged():
    rgb = read_image(SAMPLES[1])
    legacy = prepare(rgb, (64, 64))
    assert np.array_equal(prepare(rgb, (64, 64), white_reference=None), legacy)
    assert not np.array_equal(prepare(rgb, (64, 64), white_reference="background"), legacy)
    with pytest.raises(ValueError, match="white reference"):
        prepare(rgb, (64, 64), white_reference="grey-card")


def _manifest_dict(**inp) -> dict:
    return {
        "schema_version": 1,
        "name": "m",
        "labels": ["Benign", "Pre"],
        "input": {"width": 64, "height": 64, **inp},
        "outputs": [{"name": "probabilities", "shape": [1, 2]}],
        "sha256": "0" * 64,
    }


def test_manifest_carries_scale_and_white_reference():
    m = Manifest.from_dict(_manifest_dict(um_per_px=0.21, white_reference="background"))
    assert m.input.um_per_px == pytest.approx(0.21)
    assert m.input.white_reference == "background"
    again = Manifest.from_dict(json.loads(json.dumps(m.to_dict())))
    assert again.input == m.input
    legacy = Manifest.from_dict(_manifest_dict())
    assert legacy.input.um_per_px is None and legacy.input.white_reference is None


@pytest.mark.parametrize(
    "inp, match",
    [
        ({"um_per_px": -1}, "um_per_px"),
        ({"um_per_px": "wide"}, "um_per_px"),
        ({"um_per_px": float("nan")}, "um_per_px"),
        ({"white_reference": "sky"}, "white_reference"),
    ],
)
def test_manifest_refuses_bad_scale_or_colour(inp, match):
    with pytest.raises(BundleError, match=match):
        Manifest.from_dict(_manifest_dict(**inp))


def test_bundle_without_scale_loads_with_a_warning(tiny_bundle, caplog):
    mpath = tiny_bundle / "manifest.json"
    d = json.loads(mpath.read_text())
    d["input"].pop("um_per_px", None)
    mpath.write_text(json.dumps(d))
    with caplog.at_level(logging.WARNING, logger="device.models.bundle"):
        assert load_bundle(tiny_bundle).manifest.input.um_per_px is None
    assert "scale unknown" in caplog.text
    caplog.clear()
    d["input"]["um_per_px"] = 0.25
    mpath.write_text(json.dumps(d))
    with caplog.at_level(logging.WARNING, logger="device.models.bundle"):
        assert load_bundle(tiny_bundle).manifest.input.um_per_px == 0.25
    assert "scale unknown" not in caplog.text


@pytest.mark.parametrize("gains", [(1.25, 1.0, 0.8), (1.2, 1.0, 0.85)])
def test_a_white_balance_that_clips_the_background_is_undone(gains):
    # Red x1.2-1.25 saturates the background's red channel: it reads 255 whatever the gain was, so only
    # the stained pixels can tell how red the camera made them (colour.reference_white).
    from device.colour import reference_white

    for path in SAMPLES[::3]:
        rgb = read_image(path)
        tinted = apply_gains(rgb, gains)
        assert estimate_background(tinted)[0] >= 254.5  # the case at hand: red clipped in the background
        ref0, ref = reference_white(rgb), reference_white(tinted)
        assert ref[0] > 255, (path.name, ref)
        assert ref[0] / ref0[0] == pytest.approx(gains[0], rel=0.08), (path.name, ref, ref0)
        want = normalise_background(rgb).astype(float)
        red_err = np.abs(want - normalise_background(tinted))[..., 0].mean()
        plain = apply_gains(tinted, np.clip(WHITE_LEVEL / estimate_background(tinted), 0.5, 3.0))
        red_err_plain = np.abs(want - plain)[..., 0].mean()  # the background as it reads, clipped
        assert red_err < 12.0 and red_err < 0.6 * red_err_plain, (path.name, red_err, red_err_plain)
        # saturated background comes out neutral, not cyan
        bg = estimate_background(normalise_background(tinted))
        assert np.all(np.abs(bg - WHITE_LEVEL) <= 6), (path.name, bg)


def test_an_unclipped_background_is_the_reference_as_it_reads():
    from device.colour import reference_white

    for path in SAMPLES:
        rgb = read_image(path)
        dim = apply_gains(rgb, (0.9, 0.9, 0.9))  # nothing clipped: nothing to extrapolate
        assert np.array_equal(reference_white(dim), estimate_background(dim)), path.name


def test_a_clipped_background_offers_its_neighbouring_guesses():
    from device.colour import _MAX_EXTRAPOLATION, WhiteReference

    ref = WhiteReference(np.array([290.0, 240.0, 230.0]))
    alts = ref.alternatives()
    reds = [w.background[0] for w in alts]
    assert len(alts) == 3 and len(set(reds)) == 3 and 290.0 not in reds
    assert all(255.0 <= r <= 255.0 * _MAX_EXTRAPOLATION + 1e-3 for r in reds)
    assert all(np.array_equal(w.background[1:], ref.background[1:]) for w in alts)  # red only
    assert min(reds) == pytest.approx(290.0 * np.exp(-0.1), rel=1e-5)
    edge = WhiteReference(np.array([350.0, 240.0, 230.0])).alternatives()  # near the ceiling
    assert [w.background[0] for w in edge] == pytest.approx([350.0 * np.exp(-0.1), 357.0])
    assert WhiteReference(np.array([250.0, 240.0, 230.0])).alternatives() == []  # nothing clipped


def test_a_background_clipped_in_blue_is_censored_and_offers_only_higher_guesses():
    from device.colour import WhiteReference, measure_white

    blue = WhiteReference(np.array([240.0, 236.0, 255.0]), censored=[2])
    assert [round(float(w.background[2]), 1) for w in blue.alternatives()] == [281.8, 311.5]
    both = WhiteReference(np.array([290.0, 236.0, 255.0]), censored=[2])
    assert both.censored == [0, 2] and len(both.alternatives()) == 4 * 3 - 1
    for path in SAMPLES[::3]:
        rgb = read_image(path)
        ref = measure_white(apply_gains(rgb, (1.0, 1.0, 1.3)))  # a cool camera clips blue
        assert 2 in ref.censored and 2 not in ref.extrapolated, path.name
        assert measure_white(apply_gains(rgb, (0.9, 0.9, 0.9))).censored == [], path.name


def test_a_channel_saturated_across_the_field_is_named_for_the_technician():
    """`saturation_hint`: a channel clipped in the background AND at 255 in >= 90% of the field has lost
    its stain to the camera; the advice names it. A clipped background alone is not that."""
    from device.colour import SATURATED_FIELD, saturation_hint

    rng = np.random.default_rng(0)
    img = rng.integers(120, 250, (200, 300, 3)).astype(np.uint8)
    img[..., 2] = 255
    img[:10, :, 2] = 200  # 5% unsaturated
    hint = saturation_hint(img, [2])
    assert hint is not None and "blue" in hint and "95%" in hint and "smearscope calibrate" in hint
    assert saturation_hint(img, [0]) is None  # red is not saturated; only the channels asked about count
    img[: int(200 * (1 - SATURATED_FIELD)) + 20, :, 2] = 200  # background clipped, the cells not
    assert saturation_hint(img, [2]) is None
    img[..., 0] = 255  # red saturated everywhere, blue (now ~70%) not enough: red is named alone
    hint = saturation_hint(img, [0, 2])
    assert hint is not None and hint.startswith("the camera saturates red across") and "blue" not in hint
    img[..., 2] = 255
    assert "saturates red and blue" in (saturation_hint(img, [0, 2]) or "")


def test_a_doubted_field_from_a_camera_that_saturates_blue_says_so():
    """The shipped pair doubts a sample field shot with red and blue gains of 1.25 (blue reads 255 in ~90%
    of it); its reason then tells the technician what to change. The same field untinted: no hint."""
    from device.config import load_config
    from device.models.ensemble import Ensemble
    from device.optics.analyse import AcquisitionSettings, FieldClassifier

    root = Path(__file__).resolve().parents[1]
    ens = Ensemble.from_dirs(
        [root / "models" / "mobilenetv2-all4-int8", root / "models" / "efficientnet-lite0-all4-int8"], 2
    )
    fc = FieldClassifier(ens, AcquisitionSettings.from_config(load_config(None)))
    raw = read_image(root / "device" / "samples" / "Pre__WBC-Malignant-Pre-074.jpg")
    tinted = np.clip(raw.astype(np.float32) * np.array([1.25, 1, 1.25], np.float32), 0, 255).astype(np.uint8)
    doubted = fc.analyse(tinted, 0.47899).field
    assert doubted.state == "uncertain"
    assert "the camera saturates blue" in doubted.reason and "smearscope calibrate" in doubted.reason
    native = fc.analyse(raw, 0.47899).field
    assert "saturates" not in (native.reason or "")
