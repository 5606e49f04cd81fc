"""One image or camera frame → one field result: the path the daemon, `smearscope classify/evaluate`
and uploads share.

    frame ─► white reference (if the bundle was trained with it) ─► scale: given | profile | auto
          ─► scale check (red cells vs that scale) ─► rescale + tiles (device/optics/tiling.py)
          ─► colour check per tile ─► classify tiles ─► field rule (device/optics/field.py)

`prepare` (everything before the interpreter: the daemon runs it in the quality-gate thread) and
`classify` (the interpreter, the rule, the stitched heatmap) are split so the live pipeline keeps
the classifier's core for inference.

The frame's scale (`scale`):
- a number: the frame's µm/px (a calibration profile's, or typed); the red cells are checked against
  it and a frame outside the tolerance is not classified;
- "auto": estimated from the frame's red cells; when the estimator cannot tell the image is not
  classified ("uncertain — refer", with the reason);
- None: the image is assumed to be at the model's scale (centre crop resized to one tile), and the
  scale check compares the red cells with the scale that implies: files get the call with the check
  reported (so `evaluate` reproduces a model card); the daemon (`refuse_assumed`) does not call a frame
  that fails it.
A bundle without `input.um_per_px` ("scale unknown") always gets the centre crop and no check.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from device.colour import WhiteReference, measure_white, saturation_hint
from device.config import OpticsConfig, QualityConfig, TilingConfig
from device.models.ensemble import Ensemble, Prediction
from device.optics.field import RULE, FieldResult, combine
from device.optics.nuclei import NucleusThresholds
from device.optics.scalecheck import Estimator, ScaleCheck, check_scale, estimate_um_per_px, not_run
from device.optics.tiling import TilePlan, TileSpec, plan_tiles, stitch_heatmap

log = logging.getLogger(__name__)
AUTO = "auto"
#: How many of a frame's most nucleated tiles decide between white references (`settle_white`).
_WHITE_PROBE_TILES = 2
#: ... and how much farther (summed content distance) the measured white may be before an alternative
#: that makes as few checks fire is preferred anyway. Without a margin a near-tie flips to a guessed white
#: that can be confidently wrong; a wide one keeps clipped frames "uncertain" more often. The choice is
#: measured by `benchmarks/acquisition_eval.py` (tint rows, benchmarks/results/acquisition_eval.md).
_WHITE_DISTANCE_MARGIN = 1.1
ScaleArg = float | str | None


class PendingChecks(Sequence):
    """The colour check's reasons per tile, filled on the gate's thread (`FieldClassifier.run_check`)
    while the classifier already infers the first tiles: reading tile i waits until its check is in.
    The check of one tile (~0.1 ms) is done long before the tile's two invokes (~4 ms), so the
    classifier hardly ever waits, and ~1 ms of every frame leaves the critical path."""

    def __init__(self, n: int, timeout: float = 60.0):
        self._items: list[list[str] | None] = [None] * n
        self._error: str | None = None
        self._cond = threading.Condition()
        self.timeout = timeout

    def __len__(self) -> int:
        return len(self._items)

    def put(self, i: int, reasons: list[str]) -> None:
        with self._cond:
            self._items[i] = reasons
            self._cond.notify_all()

    def fail(self, error: str) -> None:
        with self._cond:
            self._error = error
            self._cond.notify_all()

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        with self._cond:
            ok = self._cond.wait_for(lambda: self._items[i] is not None or self._error, self.timeout)
            if self._error:
                raise RuntimeError(f"the colour check failed: {self._error}")
            if not ok:
                raise RuntimeError(f"the colour check of tile {i} did not finish in {self.timeout:g} s")
            return self._items[i]


#: The defaults of the sections AcquisitionSettings reads; device/config.py holds them (and their ranges).
_TILING, _QUALITY, _OPTICS = TilingConfig(), QualityConfig(), OpticsConfig()


@dataclass(frozen=True)
class AcquisitionSettings:
    """`[tiling]`, the scale-check keys of `[quality]` and `[optics] rbc_diameter_um` (device/config.py)."""

    overlap: float = _TILING.overlap
    max_tiles: int = _TILING.max_tiles
    min_cover: float = _TILING.min_cover
    min_nucleus_um2: float = _TILING.min_nucleus_um2
    scale_check: bool = _QUALITY.scale_check
    scale_tolerance: float = _QUALITY.scale_tolerance
    rbc_um: float = _OPTICS.rbc_diameter_um
    clipped_white_choice: bool = _OPTICS.clipped_white_choice

    @classmethod
    def from_config(cls, config) -> AcquisitionSettings:
        t, q, o = config.tiling, config.quality, config.optics
        return cls(
            t.overlap,
            t.max_tiles,
            t.min_cover,
            t.min_nucleus_um2,
            q.scale_check,
            q.scale_tolerance,
            o.rbc_diameter_um,
            o.clipped_white_choice,
        )


def parse_scale(text: str | None) -> ScaleArg:
    """`--um-per-px` / the upload form's value: "", None → None; "auto" → "auto"; else a float > 0."""
    if text is None or str(text).strip() == "":
        return None
    s = str(text).strip().lower()
    if s == AUTO:
        return AUTO
    try:
        v = float(s)
    except ValueError as exc:
        raise ValueError(f"um_per_px: expected a number of µm per pixel or 'auto', not {text!r}") from exc
    if not (0.001 <= v <= 100.0):
        raise ValueError(f"um_per_px: {v} is not a plausible µm per pixel (0.001 to 100)")
    return v


def scale_what(source: str) -> str:
    """How a scale check names a numeric scale from `source` ("profile:<name>" or "given"): a
    calibration's mismatch reads "objective changed?"."""
    return "the calibration" if source.startswith("profile") else "the given scale"


def red_cell_check(
    rgb: np.ndarray,
    expected: float | None,
    what: str,
    settings: AcquisitionSettings,
    estimator: Estimator | None = None,
) -> ScaleCheck:
    """The frame's red cells against `expected` µm/px (`[quality] scale_check`, `scale_tolerance`);
    the field path and the cell path (device/screening) share it."""
    if not settings.scale_check:
        return not_run("scale check switched off ([quality] scale_check = false)", expected)
    return check_scale(
        rgb,
        expected,
        tolerance=settings.scale_tolerance,
        rbc_um=settings.rbc_um,
        what=what,
        estimator=estimator,
    )


def auto_scale(
    rgb: np.ndarray, settings: AcquisitionSettings, estimator: Estimator | None = None
) -> tuple[float | None, ScaleCheck, str | None]:
    """The frame's µm/px from its red cells: (µm/px or None, the check to report, why the frame is
    refused when the red cells cannot tell the magnification)."""
    um, est = estimate_um_per_px(rgb, rbc_um=settings.rbc_um, estimator=estimator)
    if um is None:
        why = getattr(est, "reason", None) or "too few red cells"
        refused = f"scale unknown: the red cells cannot tell the magnification ({why})"
        return None, not_run(refused), refused
    check = ScaleCheck(True, True, None, um, None, f"scale from the red cells: {um:.3g} µm/px")
    check.n_cells = int(getattr(est, "n_cells", 0) or 0)
    return um, check, None


@dataclass(frozen=True)
class _ScalePlan:
    """The tiles at the frame's scale and what the scale check knows so far (`prepare`'s first step)."""

    plan: TilePlan | None  # None: the scale could not be measured (the frame is refused)
    um: float | None  # the frame's scale, recorded
    source: str  # Prepared.scale_source
    check: ScaleCheck
    deferred: tuple | None = None  # Prepared.deferred: the red-cell check still to run
    refused: str | None = None  # why the frame is refused before its tiles are cut


@dataclass
class Prepared:
    """A frame made ready for the interpreter (or refused before it)."""

    plan: TilePlan | None
    um_per_px: float | None  # the frame's scale the tiles were cut at (None: legacy / refused)
    scale_source: str  # "given" | "profile:<name>" | "auto" | "assumed" | "unknown"
    check: ScaleCheck
    refused: str | None  # why the frame is not classified
    image: np.ndarray  # the frame as the camera gave it (the stitched heatmap is drawn over it)
    # colour check per selected tile (`PendingChecks` while the gate's thread still fills it)
    prechecks: Sequence[list[str]] = field(default_factory=list)
    prepare_ms: float = 0.0
    check_ms: float = 0.0
    deferred: tuple | None = None  # (rgb, expected µm/px, what, suffix) of a check not run yet
    # the red-cell check already made on an earlier frame of this settling field (`check_ahead`)
    check_ahead: ScaleCheck | None = None
    white: WhiteReference | None = None  # the white reference the tiles were cut with
    # other renderings of a frame whose clipped background was extrapolated: (reference, plan); the
    # classifier keeps the one its models find most familiar (`FieldClassifier.settle_white`)
    alternatives: list[tuple[WhiteReference, TilePlan]] = field(default_factory=list)
    white_candidates: int = 1  # how many references were compared (1: no choice was made)


@dataclass
class FieldAnalysis:
    prepared: Prepared
    field: FieldResult
    prediction: Prediction  # the field as a Prediction (records); `cam` = the stitched heatmap
    heat_base: np.ndarray | None  # the image the heatmap is drawn over
    inference_ms: float = 0.0

    def tile_labels(self) -> dict[int, str]:
        plan = self.prepared.plan
        if plan is None:
            return {}
        index = {id(t): i for i, t in enumerate(plan.tiles)}
        return {
            index[id(t)]: (p.display if p.abstained else p.label)
            for t, p in zip(plan.selected, self.field.tiles, strict=False)
        }

    def to_dict(self, *, outlines: bool = False) -> dict[str, Any]:
        p = self.prepared
        out: dict[str, Any] = {
            "state": self.field.state,
            "display": self.field.display,
            "um_per_px": round(p.um_per_px, 5) if p.um_per_px else None,
            "scale_source": p.scale_source,
            "scale_check": p.check.to_dict(),
            "tiles": p.plan.summary() if p.plan is not None else None,
            "tile_labels": self.field.tile_labels,
            "tiles_abstained": self.field.n_abstained,
            "rule": RULE,
        }
        if p.white is not None:
            out["white_reference"] = {**p.white.describe(), "candidates": p.white_candidates}
        if outlines and p.plan is not None:
            out["outlines"] = p.plan.outlines(self.tile_labels())
        return out


class FieldClassifier:
    """Frame → field result for one ensemble (all members share the first member's tile spec)."""

    def __init__(
        self,
        ensemble: Ensemble,
        settings: AcquisitionSettings | None = None,
        *,
        estimator: Estimator | None = None,
    ):
        self.ensemble = ensemble
        self.settings = s = settings or AcquisitionSettings()
        self.estimator = estimator
        first = ensemble.models[0].manifest.input
        ums = {getattr(m.manifest.input, "um_per_px", None) for m in ensemble.models}
        um = getattr(first, "um_per_px", None)
        if len(ums) > 1:
            log.warning(
                "ensemble members declare different µm/px %s: tiles are cut at %s", sorted(map(str, ums)), um
            )
        self.white_reference = getattr(first, "white_reference", None)
        self.spec = TileSpec(
            first.width,
            first.height,
            um,
            first.resize,
            overlap=s.overlap,
            min_cover=s.min_cover,
            max_tiles=s.max_tiles,
            nuclei=NucleusThresholds(min_area_um2=s.min_nucleus_um2),
        )
        self.malignant = {lb.id for lb in ensemble.labels if lb.malignant}

    @property
    def scale_known(self) -> bool:
        return self.spec.um_per_px is not None

    def _white(self, rgb: np.ndarray) -> WhiteReference | None:
        """The frame's white reference when the bundle was trained with one (applied by the tiling)."""
        return measure_white(rgb) if self.white_reference == "background" else None

    def _check(self, rgb: np.ndarray, expected: float | None, what: str) -> ScaleCheck:
        return red_cell_check(rgb, expected, what, self.settings, self.estimator)

    def prepare(
        self,
        rgb: np.ndarray,
        scale: ScaleArg,
        *,
        source: str = "given",
        hint: str = "give the image's µm/px or 'auto'",
        defer_check: bool = False,
        refuse_assumed: bool = False,
    ) -> Prepared:
        """Everything before the interpreter. `source` names where a numeric scale came from
        ("given" or "profile:<name>"): a profile's mismatch reads "objective changed?". `hint`: what
        to do when an image assumed at the models' scale (`scale` None) is not. `defer_check`: cut
        the tiles but leave their colour checks and the red-cell check to `run_check(prepared)` (the
        daemon runs it on another core while the tiles are classified, and publishes nothing until it
        is done)."""
        t0 = time.perf_counter()
        white = self._white(rgb)
        sp = self._plan_scale(rgb, scale, white, source=source, hint=hint, refuse_assumed=refuse_assumed)
        plan, um, refused = sp.plan, sp.um, sp.refused
        if plan is not None and plan.refused:
            refused = plan.refused
        prepared = Prepared(plan, um, sp.source, sp.check, refused, rgb, white=white)
        if refused is None and plan is not None and white is not None and self.settings.clipped_white_choice:
            frame_um = um if self.spec.um_per_px is not None else None
            prepared.alternatives = [
                (w, plan_tiles(rgb, frame_um, self.spec, w)) for w in white.alternatives()
            ]
        prepared.deferred = sp.deferred if refused is None else None
        if prepared.refused is None and plan is not None and not prepared.alternatives:
            if defer_check:
                prepared.prechecks = PendingChecks(len(plan.selected))
            else:
                self.run_check(prepared)
                if prepared.refused is None:
                    prepared.prechecks = [self.ensemble.tile_colour_reasons(t.rgb) for t in plan.selected]
        elif not defer_check:
            self.run_check(prepared)
        prepared.prepare_ms = (time.perf_counter() - t0) * 1000
        return prepared

    def _plan_scale(
        self,
        rgb: np.ndarray,
        scale: ScaleArg,
        white: WhiteReference | None,
        *,
        source: str,
        hint: str,
        refuse_assumed: bool,
    ) -> _ScalePlan:
        """The tiles at the frame's scale (unknown, assumed, measured or given) and the scale check as far
        as it goes before the tiles are classified."""
        spec = self.spec
        if spec.um_per_px is None:
            plan = plan_tiles(rgb, None, spec, white)
            check = not_run("scale check cannot run: the models declare no µm/px (scale unknown)")
            # the frame's own scale is still known (and recorded), just not used
            um = float(scale) if scale is not None and scale != AUTO else None
            return _ScalePlan(plan, um, "unknown", check)
        if scale is None:
            plan = plan_tiles(rgb, None, spec, white)
            implied = spec.um_per_px * plan.factor  # frame µm/px = model µm/px x model px per frame px
            what = "the models' scale (the image resized to one tile)"
            # files (classify/evaluate/upload "model"): the check is reported beside the call;
            # the daemon (refuse_assumed) does not call a frame whose red cells disagree
            deferred = (rgb, implied, what, f" — {hint}", refuse_assumed)
            return _ScalePlan(plan, None, "assumed", not_run("scale check pending", implied), deferred)
        if scale == AUTO:
            um, check, refused = auto_scale(rgb, self.settings, self.estimator)
            plan = None if um is None else plan_tiles(rgb, um, spec, white)
            return _ScalePlan(plan, um, AUTO, check, refused=refused)
        um = float(scale)
        deferred = (rgb, um, scale_what(source), "", True)
        return _ScalePlan(
            plan_tiles(rgb, um, spec, white), um, source, not_run("scale check pending", um), deferred
        )

    def check_ahead(self, rgb: np.ndarray, um_per_px: float, *, source: str = "profile") -> ScaleCheck:
        """The red-cell check of a frame at `um_per_px`, made before the frame is classified: the daemon
        runs it on the last frame of a field that is still settling, and when the next frame settles
        unchanged it hands the result over (`Prepared.check_ahead`), so the check does not share the
        cores with the interpreters. Only for a numeric (profile or given) scale."""
        return self._check(rgb, float(um_per_px), scale_what(source))

    def run_check(self, prepared: Prepared) -> Prepared:
        """Run what `prepare(defer_check=True)` left pending: the tiles' colour checks, then the
        red-cell scale check (a mismatch refuses the frame)."""
        pending = prepared.prechecks
        if isinstance(pending, PendingChecks) and prepared.plan is not None:
            try:
                for i, t in enumerate(prepared.plan.selected):
                    pending.put(i, self.ensemble.tile_colour_reasons(t.rgb))
            except BaseException as exc:
                pending.fail(repr(exc))
                raise
        if prepared.deferred is None:
            return prepared
        rgb, expected, what, suffix, refuse = prepared.deferred
        prepared.deferred = None
        t0 = time.perf_counter()
        ahead = prepared.check_ahead
        if ahead is not None and ahead.expected_um_per_px == expected:
            check = dataclasses.replace(ahead)  # made on the same field while it settled
        else:
            check = self._check(rgb, expected, what)
        prepared.check_ms = (time.perf_counter() - t0) * 1000
        prepared.check = check
        if check.ran and not check.ok and prepared.refused is None:
            if refuse:
                prepared.refused = check.message + suffix
            else:
                check.message += suffix
        return prepared

    def classify(self, prepared: Prepared, *, with_cam: bool = True) -> FieldAnalysis:
        """Interpreter + field rule + stitched heatmap."""
        labels = self.ensemble.label_ids
        t0 = time.perf_counter()
        if prepared.refused is not None or prepared.plan is None:
            return self.refused(prepared)
        self.settle_white(prepared)
        plan = prepared.plan
        tiles = plan.selected
        preds = self.ensemble.classify_tiles(
            [t.rgb for t in tiles], with_cam=with_cam, prechecks=prepared.prechecks or None
        )
        fr = combine(preds, labels, self.malignant)
        if fr.state == "uncertain" and prepared.white is not None and prepared.white.censored:
            hint = saturation_hint(prepared.image, prepared.white.censored)
            if hint:
                fr.reason = f"{fr.reason}; {hint}" if fr.reason else hint
        ms = (time.perf_counter() - t0) * 1000
        pred = fr.to_prediction(labels, ms)
        if len(preds) == 1:
            pred.per_model = preds[0].per_model
        heat_base = None
        cams = [(t, p.cam) for t, p in zip(tiles, preds, strict=True) if p.cam is not None]
        if with_cam and cams:
            if plan.legacy:
                pred.cam, heat_base = cams[0][1], tiles[0].rgb
            else:
                pred.cam, heat_base = stitch_heatmap(plan, cams), prepared.image
        return FieldAnalysis(prepared, fr, pred, heat_base, ms)

    def settle_white(self, prepared: Prepared) -> Prepared:
        """Choose among `prepared.alternatives` (a clipped background's neighbouring white references,
        `device/colour.py`): the measured estimate, unless another rendering's most nucleated
        tiles (up to `_WHITE_PROBE_TILES`) make FEWER of the models' content and energy checks fire, or
        as few with a summed content distance more than `_WHITE_DISTANCE_MARGIN` times lower; among
        those, the fewest firing, then the lowest distance. A rendering with no nucleated tile is never
        chosen over one with. A slightly lower distance is no evidence of the true white: a tinted
        benign field was seen called "Early" that way. Runs the interpreters: the classifier's thread."""
        if not prepared.alternatives:
            return prepared
        options = [(prepared.white, prepared.plan), *prepared.alternatives]
        prepared.alternatives = []
        prepared.white_candidates = len(options)

        def score(plan: TilePlan) -> tuple:
            if plan.refused or not plan.selected:
                return (1, 0, 0.0)
            return (0, *self.ensemble.unfamiliarity([t.rgb for t in plan.selected[:_WHITE_PROBE_TILES]]))

        scores = [score(p) for _, p in options]
        best = min(range(len(options)), key=lambda i: (scores[i], i))
        if scores[0][:2] == scores[best][:2] and scores[0][2] <= _WHITE_DISTANCE_MARGIN * scores[best][2]:
            best = 0  # as familiar to the checks as the best, and not much farther: keep the measured
        prepared.white, prepared.plan = options[best]
        prepared.prechecks = [self.ensemble.tile_colour_reasons(t.rgb) for t in prepared.plan.selected]
        return prepared

    def refused(self, prepared: Prepared) -> FieldAnalysis:
        """The result of a frame that is not classified (`prepared.refused` says why)."""
        fr = FieldResult("refused", None, 0.0, {}, True, prepared.refused)
        return FieldAnalysis(prepared, fr, fr.to_prediction(self.ensemble.label_ids), None, 0.0)

    def analyse(
        self, rgb: np.ndarray, scale: ScaleArg, *, with_cam: bool = False, source: str = "given"
    ) -> FieldAnalysis:
        return self.classify(self.prepare(rgb, scale, source=source), with_cam=with_cam)
