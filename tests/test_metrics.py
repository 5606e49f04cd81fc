"""device/datasets/metrics.py (plain numpy, no sklearn on the device) must equal scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest

from device.datasets.metrics import report

sklearn_metrics = pytest.importorskip("sklearn.metrics")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_report_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = ["Benign", "Early", "Pre", "Pro"]
    y_true = rng.integers(0, 4, 200)
    y_pred = np.where(rng.random(200) < 0.7, y_true, rng.integers(0, 4, 200))
    if seed == 2:  # a class never predicted and one never present: zero_division paths
        y_pred[y_pred == 3] = 0
        y_true[y_true == 2] = 1
    got = report(y_true, y_pred, labels)
    idx = list(range(4))
    p, r, f, s = sklearn_metrics.precision_recall_fscore_support(y_true, y_pred, labels=idx, zero_division=0)
    assert got["n"] == 200
    assert got["labels"] == labels
    assert got["accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(y_true, y_pred))
    assert got["macro_f1"] == pytest.approx(
        sklearn_metrics.f1_score(y_true, y_pred, labels=idx, average="macro", zero_division=0)
    )
    assert got["confusion_matrix"] == sklearn_metrics.confusion_matrix(y_true, y_pred, labels=idx).tolist()
    for i, lb in enumerate(labels):
        pc = got["per_class"][lb]
        assert pc["precision"] == pytest.approx(p[i])
        assert pc["recall"] == pytest.approx(r[i])
        assert pc["f1"] == pytest.approx(f[i])
        assert pc["support"] == s[i]


def test_report_perfect_and_empty() -> None:
    perfect = report([0, 1, 1], [0, 1, 1], ["a", "b"])
    assert perfect["accuracy"] == 1.0 and perfect["macro_f1"] == 1.0
    empty = report([], [], ["a", "b"])
    assert empty["n"] == 0 and empty["accuracy"] == 0.0
