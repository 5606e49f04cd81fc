"""Soft-vote ensemble of bundles with the same labels: temperature, abstention, heatmap.

Safety rule: the ensemble abstains ("uncertain, refer") when an input looks unlike the training images,
when its calibrated confidence is below the threshold, or when its members disagree on the label.
A confident wrong call is the worst outcome, and softmax confidence alone is often high on inputs that
are not smears at all or come from another lab's staining. So a bundle's manifest may carry two
out-of-distribution checks, fitted by convert/calibrate.py:
- `calibration.colour_check`: Mahalanobis distance of the model input's colour statistics (CIELAB mean
  and log standard deviation per channel) from the training images'; above the threshold = unfamiliar;
- `calibration.ood_floor`: the logit energy (from the CAM output) below the floor = unfamiliar;
- `calibration.content_check`: the model's own `ood_distance` output — the squared
  Mahalanobis distance of its pooled embedding to the nearest class mean, max-combined with the same
  score on earlier backbone features in newer bundles (convert/content.py) — above the threshold = the
  CONTENT is unlike anything it was taught (another cell type, no white cell, a texture, a stain far
  outside training's, the wrong scale), even when the colours look right and the softmax is confident.
Each check can be switched off separately (`colour_check`, `energy_check`, `content_check`) to measure
what it catches alone; `ood_check=False` switches all three off.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from common.wording import UNCERTAIN
from device.errors import BundleError
from device.models.bundle import InputSpec, Label
from device.models.model import TFLiteModel
from device.preprocess import prepare

_EPS = 1.0 / 512  # below one uint8 quantisation step of a softmax output


def _input_key(spec: InputSpec) -> tuple:
    """Models whose inputs are prepared alike share one prepared array."""
    return (spec.width, spec.height, spec.resize, spec.white_reference)


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Softmax(log p / T): the same as dividing the logits by T, computed from probabilities.

    Works on one probability vector (K,) or a batch (N, K) (convert/calibrate.py fits T with it)."""
    if temperature == 1.0:
        return probs
    logp = np.log(np.clip(probs, _EPS, 1.0)) / temperature
    logp -= logp.max(axis=-1, keepdims=True)
    e = np.exp(logp)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def energy(cam: np.ndarray) -> float:
    """log-sum-exp of the image's class logits, i.e. of the CAM's spatial mean (global average pooling
    is linear). Low energy = the features look unlike anything the classifier was trained on
    (Liu et al., "Energy-based out-of-distribution detection", NeurIPS 2020)."""
    return float(energies(cam[None])[0])


def energies(cams: np.ndarray) -> np.ndarray:
    """`energy` of each of N activation maps (N, h, w, K), float64 (N,)."""
    n, k = cams.shape[0], cams.shape[-1]
    logits = cams.reshape(n, -1, k).mean(axis=1).astype(np.float64)
    top = logits.max(axis=1, keepdims=True)
    return (top + np.log(np.exp(logits - top).sum(axis=1, keepdims=True)))[:, 0]


def ood_floor(manifest) -> float | None:
    """The energy floor from `manifest.calibration["ood_floor"]["threshold"]`, if the bundle has one."""
    spec = (manifest.calibration or {}).get("ood_floor")
    if isinstance(spec, dict) and spec.get("score") == "energy" and spec.get("threshold") is not None:
        return float(spec["threshold"])
    return None


def content_threshold(manifest) -> float | None:
    """The content-check threshold from `manifest.calibration["content_check"]`, if the bundle has one."""
    spec = (manifest.calibration or {}).get("content_check")
    if isinstance(spec, dict) and spec.get("threshold") is not None:
        return float(spec["threshold"])
    return None


def colour_stats(rgb: np.ndarray) -> np.ndarray:
    """CIELAB mean and log(1 + standard deviation) per channel (6 values) of an RGB uint8 image.
    The log makes featureless inputs (blank fields, heavy blur: std near 0) stand far out.

    A model-size input is measured on every other pixel of each axis (an exact 2x nearest-neighbour
    subsample: mean and standard deviation are sampled, not smoothed): a third of the cost per tile, for
    distances far inside the thresholds' margin (`benchmarks/acquisition_eval.py` checks the verdicts)."""
    h, w = rgb.shape[:2]
    if h >= 128 and w >= 128:
        rgb = cv2.resize(rgb, (w // 2, h // 2), interpolation=cv2.INTER_NEAREST)
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)
    mean, std = cv2.meanStdDev(lab)  # population std, as numpy's; ~20x faster on the frame loop
    return np.concatenate([mean.ravel(), np.log1p(std.ravel())]).astype(np.float64)


@dataclass(frozen=True)
class ColourCheck:
    mean: np.ndarray  # (6,)
    inv_cov: np.ndarray  # (6, 6)
    threshold: float

    @classmethod
    def from_manifest(cls, manifest) -> ColourCheck | None:
        spec = (manifest.calibration or {}).get("colour_check")
        if not isinstance(spec, dict) or spec.get("threshold") is None:
            return None
        return cls(
            np.asarray(spec["mean"], np.float64),
            np.asarray(spec["inv_cov"], np.float64),
            float(spec["threshold"]),
        )

    def distance(self, rgb: np.ndarray) -> float:
        return self.distance_of(colour_stats(rgb))

    def distance_of(self, stats: np.ndarray) -> float:
        d = stats - self.mean
        return float(np.sqrt(max(0.0, d @ self.inv_cov @ d)))


@dataclass
class Prediction:
    labels: list[str]
    probabilities: dict[str, float]
    label: str  # the arg-max label, reported even when abstained
    confidence: float
    abstained: bool
    reason: str | None = None  # why it abstained
    per_model: dict[str, list[float]] = field(default_factory=dict)
    cam: np.ndarray | None = None  # float32 (h, w) in 0..1 for `label`, model resolution
    inference_ms: float = 0.0
    #: the out-of-distribution checks that fired (colour, energy, content), apart from the other
    #: reasons to abstain: a cell classifier's decision reads them alone (`device.cells.decide`)
    unfamiliar: list[str] = field(default_factory=list)

    @property
    def display(self) -> str:
        return UNCERTAIN if self.abstained else self.label

    def to_dict(self) -> dict:
        return {
            "label": self.label,
            "confidence": round(self.confidence, 6),
            "probabilities": {k: round(v, 6) for k, v in self.probabilities.items()},
            "abstained": self.abstained,
            "reason": self.reason,
            "per_model": {k: [round(x, 6) for x in v] for k, v in self.per_model.items()},
            "inference_ms": round(self.inference_ms, 3),
        }


class Ensemble:
    def __init__(
        self,
        models: Sequence[TFLiteModel],
        *,
        threshold: float | None = None,
        abstain_on_disagreement: bool = True,
        ood_check: bool = True,
        colour_check: bool = True,
        energy_check: bool = True,
        content_check: bool = True,
    ):
        if not models:
            raise BundleError("no model bundles to serve")
        first = models[0].manifest
        for m in models[1:]:
            if m.manifest.label_ids != first.label_ids:
                raise BundleError(
                    f"bundle {m.manifest.name} has labels {m.manifest.label_ids}, but "
                    f"{first.name} has {first.label_ids}: an ensemble needs the same labels in the same order"
                )
        self.models = list(models)
        self.labels: list[Label] = list(first.labels)
        self.label_ids = first.label_ids
        self.threshold = (
            float(threshold) if threshold is not None else max(m.manifest.abstain_threshold for m in models)
        )
        self.abstain_on_disagreement = abstain_on_disagreement
        # Per member: the energy floor below which the input counts as out of distribution.
        self.ood_floors: dict[str, float] = {}
        self.colour_checks: dict[str, ColourCheck] = {}
        self.content_thresholds: dict[str, float] = {}
        if ood_check:
            for m in models:
                floor = ood_floor(m.manifest)
                if energy_check and floor is not None and m.has_cam:
                    self.ood_floors[m.manifest.name] = floor
                check = ColourCheck.from_manifest(m.manifest)
                if colour_check and check is not None:
                    self.colour_checks[m.manifest.name] = check
                limit = content_threshold(m.manifest)
                if content_check and limit is not None and m.has_distance:
                    self.content_thresholds[m.manifest.name] = limit

    @classmethod
    def from_dirs(cls, dirs: Sequence[str], num_threads: int | None = None, **kw) -> Ensemble:
        return cls([TFLiteModel.from_dir(str(d), num_threads) for d in dirs], **kw)

    @classmethod
    def configured(cls, dirs: Sequence[str | Path], classifier, threads: int | None = None) -> Ensemble:
        """The bundles of `dirs` with the `[classifier]` section's threads, abstain threshold (0: the
        bundles' own) and disagreement rule."""
        return cls.from_dirs(
            [str(d) for d in dirs],
            num_threads=threads or classifier.threads,
            threshold=classifier.abstain_threshold or None,
            abstain_on_disagreement=classifier.abstain_on_disagreement,
        )

    @property
    def names(self) -> list[str]:
        return [m.manifest.name for m in self.models]

    @property
    def hashes(self) -> dict[str, str]:
        return {m.manifest.name: m.manifest.sha256 for m in self.models}

    @property
    def has_cam(self) -> bool:
        return any(m.has_cam for m in self.models)

    def _prepared(self, rgb: np.ndarray) -> dict[tuple, np.ndarray]:
        prepared: dict[tuple, np.ndarray] = {}
        for m in self.models:
            spec = m.manifest.input
            key = _input_key(spec)
            if key not in prepared:
                prepared[key] = prepare(rgb, spec.size, spec.resize, white_reference=spec.white_reference)
        return prepared

    def colour_reasons(self, rgb: np.ndarray) -> list[str]:
        """The colour-statistics check alone (no interpreter): thread-safe, so the daemon's quality
        gate runs it on another core and hands the result to `classify(precheck=...)`."""
        return self._colour_reasons(self._prepared(rgb))

    def _colour_reasons(self, prepared: dict[tuple, np.ndarray]) -> list[str]:
        stats: dict[tuple, np.ndarray] = {}  # members sharing an input share its statistics
        for m in self.models:
            check = self.colour_checks.get(m.manifest.name)
            if check is None:
                continue
            key = _input_key(m.manifest.input)
            if key not in stats:
                stats[key] = colour_stats(prepared[key])
            dist = check.distance_of(stats[key])
            if dist > check.threshold:
                return [f"colours unlike the training images, distance {dist:.1f} > {check.threshold:.1f}"]
        return []

    def classify(
        self, rgb: np.ndarray, *, with_cam: bool = True, precheck: list[str] | None = None
    ) -> Prediction:
        """Classify a full RGB uint8 image (any size): each model gets its own prepared input.

        `precheck`: the result of `colour_reasons(rgb)` when the caller already ran it."""
        t0 = time.perf_counter()
        prepared = self._prepared(rgb)
        unfamiliar: list[str] = list(precheck) if precheck is not None else self._colour_reasons(prepared)
        return self._verdicts([prepared], [unfamiliar], with_cam, t0)[0]

    def tile_inputs(self, tile: np.ndarray) -> dict[tuple, np.ndarray]:
        """Each model's input from a model-scale tile (`device.optics.tiling`): the tile itself when
        it has the model's size (already white-referenced and rescaled: no second `prepare`)."""
        out: dict[tuple, np.ndarray] = {}
        for m in self.models:
            spec = m.manifest.input
            key = _input_key(spec)
            if key not in out:
                same = tile.shape[:2] == (spec.height, spec.width)
                out[key] = tile if same else prepare(tile, spec.size, spec.resize)
        return out

    def tile_colour_reasons(self, tile: np.ndarray) -> list[str]:
        """`colour_reasons` of one model-scale tile (thread-safe; the daemon's gate runs it)."""
        return self._colour_reasons(self.tile_inputs(tile))

    def unfamiliarity(self, tiles: Sequence[np.ndarray]) -> tuple[int, float]:
        """How unlike the training images model-scale `tiles` look to the members' content and energy
        checks: (how many of those checks fire, summed over tiles and members; the sum of each content
        distance over its threshold). Lower is more familiar; compares renderings of one frame."""
        if not tiles:
            return 0, 0.0
        inputs = [self.tile_inputs(t) for t in tiles]
        fired, ratio = 0, 0.0
        for m in self.models:
            name = m.manifest.name
            key = _input_key(m.manifest.input)
            _, cam, dist = m.predict_many([x[key] for x in inputs], with_cam=name in self.ood_floors)
            reasons, ratios = self._member_checks(name, cam, dist, len(inputs))
            fired += sum(len(r) for r in reasons)
            ratio += float(ratios.sum()) if ratios is not None else 0.0
        return fired, ratio

    def _member_checks(
        self, name: str, cam: np.ndarray | None, dist: np.ndarray | None, n: int
    ) -> tuple[list[list[str]], np.ndarray | None]:
        """One member's energy floor and content check on n images' outputs: the reasons each image is
        unfamiliar (none: familiar) and each content distance over its threshold (None without a check)."""
        reasons: list[list[str]] = [[] for _ in range(n)]
        floor = self.ood_floors.get(name)
        if floor is not None and cam is not None:
            e = energies(cam)
            for i in np.flatnonzero(e < floor):
                reasons[i].append(f"{name} energy {e[i]:.1f} < {floor:.1f}")
        limit = self.content_thresholds.get(name)
        if limit is None or dist is None:
            return reasons, None
        for i in np.flatnonzero(dist > limit):
            reasons[i].append(
                f"{name}: content unlike the training cells, distance {dist[i]:.2f} > {limit:.2f}"
            )
        return reasons, dist / limit

    def classify_tiles(
        self,
        tiles: Sequence[np.ndarray],
        *,
        with_cam: bool = True,
        prechecks: Sequence[list[str]] | None = None,
        batch: bool = False,
    ) -> list[Prediction]:
        """Classify model-scale tiles: each member invokes them one by one, then the outputs are
        post-processed together; the same verdicts as `classify` per tile (tested). LiteRT can batch
        (`resize_tensor_input`): for a field model's 288 px tiles re-allocating the tensors as the tile
        count changes costs more than a batch saves; a cell model's 96 px crops are faster batched
        (`batch=True`; `smearscope bench` measures both).
        `prechecks`: the tiles' colour-check reasons, read only after the invokes (a `PendingChecks`
        may still be filling on the gate's thread)."""
        t0 = time.perf_counter()
        return self._verdicts([self.tile_inputs(t) for t in tiles], prechecks, with_cam, t0, batch=batch)

    def _verdicts(
        self,
        inputs: list[dict[tuple, np.ndarray]],
        prechecks: Sequence[list[str]] | None,
        with_cam: bool,
        t0: float,
        *,
        batch: bool = False,
    ) -> list[Prediction]:
        """Every member on every image's inputs, then each image's verdict: the colour check's reasons
        (`prechecks`, or measured here), then per member its energy floor and content check, then the
        confidence threshold, then member agreement."""
        n = len(inputs)
        if n == 0:
            return []
        run = self._run_members(inputs, with_cam, batch)
        stack = np.stack(run.probs)  # (members, tiles, K)
        mean = stack.mean(axis=0)
        idx = mean.argmax(axis=1)
        votes = stack.argmax(axis=2)  # (members, tiles)
        pre: Sequence[list[str]] = (
            prechecks if prechecks is not None else [self._colour_reasons(x) for x in inputs]
        )
        ms = (time.perf_counter() - t0) * 1000 / n
        out = []
        for i in range(n):
            k = int(idx[i])
            conf = float(mean[i, k])
            unfamiliar = [*pre[i], *run.reasons[i]]
            reason = self._abstain_reason(conf, unfamiliar, len(set(votes[:, i].tolist())), len(run.names))
            out.append(
                Prediction(
                    labels=list(self.label_ids),
                    probabilities={lb: float(v) for lb, v in zip(self.label_ids, mean[i], strict=True)},
                    label=self.label_ids[k],
                    confidence=conf,
                    abstained=reason is not None,
                    reason=reason,
                    per_model={nm: p[i].tolist() for nm, p in zip(run.names, run.probs, strict=True)},
                    cam=_combine_cams([c[i] for c in run.cams], k) if run.cams else None,
                    inference_ms=ms,
                    unfamiliar=unfamiliar,
                )
            )
        return out

    def _run_members(self, inputs: list[dict[tuple, np.ndarray]], with_cam: bool, batch: bool) -> _MemberRuns:
        """Each member on every image (calibrated probabilities), with its energy floor and content
        check's reasons per image."""
        run = _MemberRuns([], [], [], [[] for _ in inputs])
        for m in self.models:
            name = m.manifest.name
            floor = self.ood_floors.get(name)
            key = _input_key(m.manifest.input)
            xs = [x[key] for x in inputs]
            want = with_cam or floor is not None
            p, cam, dist = (
                m.predict_many(xs, with_cam=want, batch=True) if batch else m.predict_many(xs, with_cam=want)
            )
            for i, r in enumerate(self._member_checks(name, cam, dist, len(inputs))[0]):
                run.reasons[i].extend(r)
            run.names.append(name)
            run.probs.append(apply_temperature(p, m.manifest.temperature))
            if with_cam and cam is not None:
                run.cams.append(cam)
        return run

    def _abstain_reason(
        self, conf: float, unfamiliar: list[str], distinct_votes: int, members: int
    ) -> str | None:
        """Why one image's call is withheld, in the order the checks apply; None when it stands."""
        if unfamiliar:
            return "input unlike the training images (" + "; ".join(unfamiliar) + ")"
        if conf < self.threshold:
            return f"confidence {conf:.2f} below threshold {self.threshold:.2f}"
        if self.abstain_on_disagreement and members > 1 and distinct_votes > 1:
            return "models disagree"
        return None


@dataclass
class _MemberRuns:
    """What the members said about a batch of images (`Ensemble._run_members`)."""

    names: list[str]
    probs: list[np.ndarray]  # per member: (images, K), temperature applied
    cams: list[np.ndarray]  # per member that gave one: (images, h, w)
    reasons: list[list[str]]  # per image: the members' energy and content reasons


def _combine_cams(cams: list[np.ndarray], idx: int) -> np.ndarray:
    """Average each model's activation map for class `idx`, normalised to 0..1."""
    size = max(c.shape[0] for c in cams)
    maps = []
    for c in cams:
        m = c[..., idx].astype(np.float32)
        if m.shape[0] != size:
            m = cv2.resize(m, (size, size), interpolation=cv2.INTER_LINEAR)
        m -= m.min()
        peak = m.max()
        maps.append(m / peak if peak > 0 else m)
    return np.mean(maps, axis=0).astype(np.float32)


def heatmap_overlay(rgb: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blend a 0..1 activation map over an RGB image (JET colour map), same size as `rgb`."""
    h, w = rgb.shape[:2]
    m = cv2.resize(cam, (w, h), interpolation=cv2.INTER_CUBIC)
    m = np.clip(m * 255, 0, 255).astype(np.uint8)
    colour = cv2.cvtColor(cv2.applyColorMap(m, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(rgb, 1 - alpha, colour, alpha, 0)
