"""A frame's tiles are invoked one by one and post-processed together (`Ensemble._verdicts`,
`TFLiteModel.predict_many`): the figures and verdicts must be those each tile gets on its own."""

from __future__ import annotations

import numpy as np

from device.models.ensemble import Ensemble, energies, energy
from device.models.model import TFLiteModel
from device.paths import REPO_ROOT, SAMPLES_DIR
from device.preprocess import prepare, read_image

SHIPPED = [REPO_ROOT / "models" / n for n in ("mobilenetv2-all4-int8", "efficientnet-lite0-all4-int8")]


def _tiles(size: int, n: int = 6) -> list[np.ndarray]:
    paths = sorted(SAMPLES_DIR.glob("*.jpg"))[:n]
    tiles = [prepare(read_image(p), (size, size), "center_crop", white_reference="background") for p in paths]
    grey = np.full((size, size, 3), 128, np.uint8)  # unlike any field: the checks should fire
    return [*tiles, grey]


def test_predict_many_gives_what_predict_gives_each_input():
    m = TFLiteModel.from_dir(str(SHIPPED[0]), 1)
    tiles = _tiles(m.manifest.input.width)
    probs, cams, dists = m.predict_many(tiles, with_cam=True)
    assert probs.shape == (len(tiles), len(m.manifest.labels)) and cams is not None and dists is not None
    for i, t in enumerate(tiles):
        one = m.predict(t, with_cam=True)
        np.testing.assert_allclose(probs[i], one.probabilities, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(cams[i], one.cam, rtol=1e-6)
        assert abs(dists[i] - one.ood_distance) < 1e-5
    assert m.predict_many(tiles, with_cam=False)[1] is None
    np.testing.assert_allclose(energies(cams), [energy(c) for c in cams], rtol=1e-12)


def test_a_frames_tiles_get_the_verdicts_each_tile_gets_alone():
    ens = Ensemble.from_dirs([str(d) for d in SHIPPED], 1)
    tiles = _tiles(ens.models[0].manifest.input.width)
    together = ens.classify_tiles(tiles, with_cam=True)
    alone = [ens.classify_tiles([t], with_cam=True)[0] for t in tiles]
    assert any(p.abstained for p in together) and any(not p.abstained for p in together)
    for a, b in zip(together, alone, strict=True):
        assert (a.label, a.abstained, a.reason) == (b.label, b.abstained, b.reason)
        assert a.probabilities == b.probabilities and a.per_model == b.per_model
        np.testing.assert_allclose(a.cam, b.cam, rtol=1e-6)
