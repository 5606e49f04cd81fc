"""benchmarks/content_cost.py --without: two bundles' invokes timed interleaved on the same input."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("content_cost", ROOT / "benchmarks" / "content_cost.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["content_cost"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_interleaved_times_both_models(tiny_bundle: Path, monkeypatch, capsys) -> None:
    pytest.importorskip("tensorflow")  # main() converts the head alone
    mod = _module()
    calls = []
    real = mod._interleaved

    with_ms, without_ms = real(tiny_bundle, tiny_bundle, 1, 6)
    assert with_ms > 0 and without_ms > 0
    # the same model twice: the two medians are of one magnitude (no order or warm-up bias of 10x)
    assert 0.1 < with_ms / without_ms < 10
    monkeypatch.setattr(mod, "_interleaved", lambda *a: calls.append(a) or (1.1, 1.0))
    monkeypatch.setattr(mod, "_median_ms", lambda *a, **k: 0.5)
    assert mod.main([str(tiny_bundle), "--dim", "8", "--without", str(tiny_bundle), "--runs", "1"]) == 0
    assert [a[2] for a in calls] == [1, 2]  # 1 and 2 threads, both against the bundle given
    assert all(a[1] == tiny_bundle for a in calls)
    out = capsys.readouterr().out
    assert "in the graph, 1 thread(s)" in out and "extra 0.100 ms = 10.0% of the invoke" in out
