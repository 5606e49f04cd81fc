"""`smearscope bench`'s field figures (issue 10) on the shipped ensemble: the numbers the speed bar is read
from must be the frame's own, not a stale or empty measurement. Timings themselves are not asserted."""

from __future__ import annotations

from device.commands._bench_acquisition import measure_field
from device.config import load_config
from device.paths import REPO_ROOT


def test_the_field_bench_classifies_real_tiles_and_reports_each_ratio():
    cfg = load_config(system_config=None, env={})
    dirs = [str(REPO_ROOT / "models" / n) for n in ("mobilenetv2-all4-int8", "efficientnet-lite0-all4-int8")]
    out = measure_field(cfg, dirs, model_um=None, size=(640, 360), magnification=1.6, rounds=2)
    assert out["tiles_classified"] >= 1 and out["tiles_total"] >= out["tiles_classified"]
    assert out["scale_check"].startswith("scale check ok"), out["scale_check"]
    assert out["field_state"] in {"classified", "uncertain"}
    assert out["invoke_ms_per_frame"] > 0 and out["invoke_ms_per_frame_alone"] > 0
    # wall = invoke + everything else: each ratio is the frame's wall time over one invoke measure
    wall = out["field_ms"]
    assert abs(out["other_ms_per_frame"] - (wall - out["invoke_ms_per_frame"])) < 0.2
    alone = out["other_over_invoke_alone"]
    inv = out["invoke_ms_per_frame_alone"]
    rounding = 0.05 * (1 / inv + wall / inv**2)  # both figures are reported to 0.1 ms
    assert abs(alone - (wall - inv) / inv) < rounding + 0.002
    assert out["other_over_invoke_sequential"] >= out["other_over_invoke"] - 0.05  # the check adds, in series
    settled = out["check_made_while_settling"]
    assert settled["invoke_ms_per_frame"] > 0
    assert abs(settled["other_ms_per_frame"] - (settled["field_ms"] - settled["invoke_ms_per_frame"])) < 0.2
