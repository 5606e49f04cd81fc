"""How calm is the live call on the virtual microscope: does a still field keep its result, and how often
does the scale check claim "objective changed" on one objective?

    PYTHONPATH=. .venv/bin/python benchmarks/live_calm.py [--paced] [--minutes 10]
        [--config docs/examples/virtual-hq.toml] [--um-per-px 0.155] [--model DIR]...
        [--out benchmarks/results/live_calm]

`--paced` runs in real time, as a station does: the camera reads at its fps for `--minutes` of wall
time and the classifier takes what it can (frames it cannot take are dropped), first on one still field
(the stage never moves), then on a sequence of fields. Without it the run is unpaced (below).

Runs the daemon's real pipeline (`device.services.Services`: capture, gate, classifier, store) over the
virtual microscope of `--config` (default the virtual HQ camera: 2028x1520 at 0.155 µm/px, 4 s dwell,
1 s move, noise 2.5) with a calibration profile at `--um-per-px` (the camera's true scale unless told
otherwise), unpaced: every frame of the simulated `--minutes` at the camera's fps is processed, so the
counts depend on the frames, not on how busy the machine is. Every result the pipeline publishes is
recorded with the frame it belongs to; the virtual stage's position tells which dwell (still period) a
frame is in. Counted per dwell, from the first call published on its frames:

- calls: the distinct (state, label, display) results published on the dwell's still frames;
- changes: how often the published call changed within the dwell (the target is 0);
- fields classified (new_field results), and scale refusals ("objective changed?" on the frame);
- calls or scale refusals published for frames taken while the stage moved (the page should say
  "field moving" then), apart from the one frame that holds the field's result (`held`);
- fields not classified because their own red cells disagree (`scale_doubt`, "uncertain for this field");
- scale-state changes to "mismatch" (the status page's "objective changed?" alarm) over the run.

Writes `<out>.json` (per-dwell rows and totals) and `<out>.md` (the summary).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from device.camera.profiles import Profile  # noqa: E402
from device.camera.virtual import VirtualOptics  # noqa: E402
from device.config import load_config  # noqa: E402
from device.optics.scalecheck import MISMATCH  # noqa: E402
from device.services import Services  # noqa: E402

#: A still stage as one dwell longer than any run.
STILL_DWELL_S = 1e9


def _optics(cam) -> VirtualOptics:
    return VirtualOptics(
        width=cam.width,
        height=cam.height,
        um_per_px=cam.um_per_px,
        dwell_s=cam.dwell_s if cam.pan else STILL_DWELL_S,
        move_s=cam.move_s if cam.pan else 0.0,
        pan=cam.pan,
    )


def _call(r: dict[str, Any]) -> tuple:
    """What the technician reads: the state, the label and the displayed text (a scale refusal's message
    carries the red cells' figures, so only its kind is kept)."""
    state = r.get("state") or ("rejected" if r.get("rejected") else "classified")
    display = str(r.get("display") or "")
    if state == "scale":
        display = "objective changed?" if MISMATCH in display else display.split("(")[0]
    return (state, r.get("label"), display)


class _Recorder:
    """Wraps the live view's `publish_result`: every result the page would get, in order, and each
    change of the scale check's state (the frame it happened at)."""

    def __init__(self, pipe) -> None:
        self.pipe = pipe
        self.records: list[dict[str, Any]] = []
        self.scale_states: list[tuple[int, str]] = []
        self.lock = threading.Lock()
        self._publish = pipe.live.publish_result
        pipe.live.publish_result = self.publish

    def publish(self, result, rgb=None, cam_map=None):
        with self.lock:
            self.records.append(
                {
                    "frame_seq": result.get("frame_seq"),
                    "call": _call(result),
                    "new": bool(result.get("new_field")),
                    "kept": bool(result.get("republished")),  # an unchanged (or held) field's result
                    "doubt": bool(result.get("scale_doubt")),
                }
            )
            st = self.pipe.scale_status.get("state")
            if not self.scale_states or self.scale_states[-1][1] != st:
                self.scale_states.append((int(result.get("frame_seq") or 0), st))
        return self._publish(result, rgb, cam_map)

    def snapshot(self) -> tuple[list[dict[str, Any]], list[tuple[int, str]]]:
        with self.lock:
            return list(self.records), list(self.scale_states)


def _run_config(config_path: Path, data_dir: Path, models: list[str], still: bool):
    over: dict[str, Any] = {"store": {"every_s": 3600.0, "reserve_mb": 0}}
    if models:
        over["classifier"] = {"models": models}
    if still:
        over["camera"] = {"pan": False}
    return load_config(config_path, data_dir=data_dir, overrides=over, system_config=None, env={})


def run(
    minutes: float,
    config_path: Path,
    um_per_px: float | None,
    models: list[str],
    checkpoint: Callable[[dict[str, Any]], None] | None = None,
    every_s: float = 60.0,
    *,
    paced: bool = False,
    still: bool = False,
) -> dict[str, Any]:
    """The run's summary; `checkpoint(partial summary)` every `every_s` of wall time (a slow machine's
    long run leaves figures behind even when it is stopped). `paced`: the camera reads at its real fps
    for `minutes` of wall time, and frames the classifier cannot take are dropped as on a station;
    `still`: the stage never moves (one field for the whole run)."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = _run_config(config_path, Path(tmp) / "data", models, still)
        optics = _optics(cfg.camera)
        fps = cfg.camera.fps
        n_frames = int(round(minutes * 60 * fps))
        services = Services(cfg, pace=paced, sync=False)
        um = um_per_px or optics.frame_um_per_px
        services.profiles.save(Profile("virtual scope", um), activate=True)
        pipe = services.pipeline
        rec = _Recorder(pipe)
        t0 = time.monotonic()
        next_checkpoint = t0 + every_s
        services.start()
        try:
            while (
                time.monotonic() - t0 < minutes * 60
                if paced
                else pipe.telemetry.counts["captured"] < n_frames
            ):
                time.sleep(0.2)
                if time.monotonic() - t0 > 3600 * 3:
                    raise RuntimeError("benchmark took over 3 hours")
                if checkpoint is not None and time.monotonic() > next_checkpoint:
                    next_checkpoint += every_s
                    done = max(0, pipe.telemetry.counts["captured"] - 2)  # the newest may be in flight
                    part = summarise(*rec.snapshot(), optics, fps, done, um, time.monotonic() - t0)
                    checkpoint({**part, "paced": paced, "still": still, "complete": False})
            if paced:  # what a station did in that time: the frames the camera gave
                n_frames = max(0, pipe.telemetry.counts["captured"] - 2)
            pipe.paused.set()
            time.sleep(1.0)
            counts = dict(pipe.telemetry.counts)
        finally:
            services.stop()
        wall = time.monotonic() - t0
    res = summarise(rec.records, rec.scale_states, optics, fps, n_frames, um, wall)
    achieved = round(n_frames / (minutes * 60), 2) if paced and minutes > 0 else None
    return {
        **res,
        "paced": paced,
        "still": still,
        "camera_fps_achieved": achieved,
        "pipeline_counts": counts,
        "complete": True,
    }


def summarise(
    records, scale_states, optics: VirtualOptics, fps: float, n_frames: int, um: float, wall: float
):
    period = optics.dwell_s + optics.move_s
    dwells: dict[int, dict[str, Any]] = {}
    moving_fields = 0  # fields classified (or refused) on a frame taken while the stage moved
    held = 0  # a field's result kept on the one frame after it that differed (Pipeline.HOLD_FRAMES)
    for r in records:
        seq = r["frame_seq"]
        if seq is None or seq > n_frames:
            continue
        i = seq - 1  # the live view numbers frames from 1, the virtual camera from 0
        t = i / fps
        k, phase = divmod(t, period)
        if phase > optics.dwell_s:  # at exactly dwell_s the stage has not moved yet (VirtualMicroscope)
            if r["kept"] and r["call"][0] != "moving":
                held += 1
            else:
                moving_fields += r["new"] or r["call"][0] == "scale"
            continue
        d = dwells.setdefault(
            int(k), {"dwell": int(k), "calls": [], "changes": 0, "fields": 0, "refusals": 0, "doubts": 0}
        )
        if r["new"]:
            d["fields"] += 1
        if r["call"][0] == "moving":
            continue  # the stage's last step still in sight: the first still frames say "moving"
        if d["calls"] and d["calls"][-1] != list(r["call"]):
            d["changes"] += 1
        if not d["calls"] or d["calls"][-1] != list(r["call"]):
            d["calls"].append(list(r["call"]))
        if r["call"][1] is None and r["call"][2] == "objective changed?":
            d["refusals"] += 1
        d["doubts"] += r["doubt"] and not r["kept"]
        d["results"] = d.get("results", 0) + 1
        d["doubt_results"] = d.get("doubt_results", 0) + r["doubt"]
    rows = [dwells[k] for k in sorted(dwells)]
    judged = [d for d in rows if d["calls"]]
    shown = sum(d.get("results", 0) for d in rows)
    n = len(rows)
    changed = sum(1 for d in rows if d["changes"])
    alarms = sum(1 for _, st in scale_states if st == "mismatch")
    return {
        "minutes": n_frames / fps / 60,
        "frames": n_frames,
        "fps": fps,
        "optics": {"width": optics.width, "height": optics.height, "um_per_px": optics.frame_um_per_px},
        "profile_um_per_px": um,
        "dwells": n,
        "dwells_with_a_change": changed,
        "call_changes": sum(d["changes"] for d in rows),
        "fields_classified": sum(d["fields"] for d in rows),
        "dwells_classified_more_than_once": sum(1 for d in rows if d["fields"] > 1),
        "results_on_moving_frames": moving_fields,
        "held_frames": held,
        "fields_uncertain_by_scale": sum(d["doubts"] for d in rows),
        "dwells_judged": len(judged),
        "uncertain_for_this_field_share": round(sum(1 for d in judged if d["doubts"]) / len(judged), 4)
        if judged
        else None,
        "results_uncertain_for_this_field_share": round(
            sum(d.get("doubt_results", 0) for d in rows) / shown, 4
        )
        if shown
        else None,
        "scale_refused_frames": sum(d["refusals"] for d in rows),
        "dwells_with_a_scale_refusal": sum(1 for d in rows if d["refusals"]),
        "scale_state_changes": scale_states,
        "objective_changed_alarms": alarms,
        "wall_s": round(wall, 1),
        "machine": platform.machine(),
        "rows": rows,
    }


def _table(res: dict[str, Any]) -> list[str]:
    pace = (
        f"paced at {res['fps']:g} fps for {res['wall_s'] / 60:.1f} minutes of wall time: "
        f"{res['frames']} frames captured ({res.get('camera_fps_achieved') or '-'} a second)"
        if res.get("paced")
        else f"{res['minutes']:.1f} simulated minutes, {res['frames']} frames at {res['fps']:g} fps "
        "(unpaced: every frame processed)"
    )
    counts = res.get("pipeline_counts") or {}
    lines = [
        f"{pace}, {res['optics']['width']}x{res['optics']['height']} at "
        f"{res['optics']['um_per_px']:.4g} µm/px, profile {res['profile_um_per_px']:.4g} µm/px; "
        f"{res['wall_s']:.0f} s wall time on {res['machine']}"
        + (
            f"; classified {counts.get('classified', 0)}, republished {counts.get('republished', 0)}, "
            f"dropped {counts.get('dropped', 0)} frames"
            if counts
            else ""
        )
        + "."
        + ("" if res.get("complete") else " **Partial: the run was still going when this was written.**"),
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| dwells (still periods) | {res['dwells']} | |",
        f"| dwells whose call changed | {res['dwells_with_a_change']} | 0 |",
        f"| call changes within a dwell | {res['call_changes']} | 0 |",
        f"| fields classified | {res['fields_classified']} | one per dwell |",
        f"| dwells classified more than once | {res['dwells_classified_more_than_once']} | 0 |",
        f"| calls or scale refusals on frames taken while moving | {res['results_on_moving_frames']} | 0 |",
        f"| fields not classified, uncertain for their own red cells (scale_doubt) | "
        f"{res.get('fields_uncertain_by_scale', '-')} | few |",
        f'| share of judged dwells "uncertain for this field" | '
        f"{_pct(res.get('uncertain_for_this_field_share'))} | few |",
        f'| share of published results "uncertain for this field" | '
        f"{_pct(res.get('results_uncertain_for_this_field_share'))} | few |",
        f"| first moving frame showing the kept result (held) | {res.get('held_frames', '-')} | |",
        f'| frames refused "objective changed?" | {res["scale_refused_frames"]} | 0 |',
        f"| dwells with such a refusal | {res['dwells_with_a_scale_refusal']} | 0 |",
        f'| scale state -> mismatch ("objective changed?" alarm) | {res["objective_changed_alarms"]} | 0 |',
        "",
    ]
    return lines


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def write_md(runs: dict[str, dict[str, Any]], path: Path, command: str) -> None:
    titles = {"still": "One still field (the stage never moves)", "fields": "A sequence of fields"}
    lines = ["# Live call calm on the virtual microscope", "", f"`{command}`", ""]
    for key, res in runs.items():
        if len(runs) > 1 or key in titles and res.get("paced"):
            lines += [f"## {titles.get(key, key)}", ""]
        lines += _table(res)
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--config", type=Path, default=ROOT / "docs/examples/virtual-hq.toml")
    ap.add_argument(
        "--um-per-px", type=float, default=None, help="the profile's µm/px (default: the camera's true one)"
    )
    ap.add_argument("--model", action="append", default=[])
    ap.add_argument(
        "--paced",
        action="store_true",
        help="real time: the camera at its fps for --minutes of wall time, a still field then a sequence",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/live_calm")
    a = ap.parse_args(argv)
    command = "PYTHONPATH=. .venv/bin/python benchmarks/live_calm.py " + " ".join(argv or sys.argv[1:])
    a.out.parent.mkdir(parents=True, exist_ok=True)
    runs: dict[str, dict[str, Any]] = {}

    def save(key: str, res: dict[str, Any]) -> None:
        runs[key] = res
        body = runs["fields"] if not a.paced else dict(runs)
        a.out.with_suffix(".json").write_text(json.dumps({**body, "command": command}, indent=1) + "\n")
        write_md(runs, a.out.with_suffix(".md"), command)

    for key in ("still", "fields") if a.paced else ("fields",):
        res = run(
            a.minutes,
            a.config,
            a.um_per_px,
            a.model,
            checkpoint=lambda part, key=key: save(key, part),
            paced=a.paced,
            still=key == "still",
        )
        save(key, res)
    print(a.out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
