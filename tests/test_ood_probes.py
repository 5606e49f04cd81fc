"""The out-of-distribution probes of convert/ood.py: every kind is made, and the stain probes re-colour
the stain while the background stays white (so the white reference cannot undo them)."""

from __future__ import annotations

import numpy as np
from make_tiny_bundle import synth_smear

from convert import ood


def _smears(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [synth_smear(("Benign", "Early", "Pre", "Pro")[i % 4], rng, 96) for i in range(n)]


def test_every_kind_gives_n_rgb_images() -> None:
    kinds: dict[str, int] = {}
    for kind, img in ood.probes(_smears(3), n=3, seed=0):
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3, kind
        kinds[kind] = kinds.get(kind, 0) + 1
    assert set(kinds.values()) == {3}
    assert {"od_stain_extreme", "od_channels_extreme", "hue_shift_90", "no_white_cells"} <= set(kinds)
    # a whole-image gain + offset is a camera (benchmarks/robustness.py "camera"), not a probe
    assert "stain_shift" not in kinds


def test_stain_probes_keep_the_background_and_move_the_stain() -> None:
    img = np.full((64, 64, 3), 250, np.uint8)
    img[16:48, 16:48] = (120, 60, 160)  # a violet "nucleus"
    rng = np.random.default_rng(3)
    for make in (ood._od_channels, ood._od_stain):
        for _ in range(5):
            out = make(img, rng).astype(int)
            assert np.abs(out[2, 2] - 250).max() <= 12  # background: near-zero density, barely moved
            change = np.abs(out[32, 32] - img[32, 32].astype(int)).max()
            assert change >= 25, (make.__name__, out[32, 32])
