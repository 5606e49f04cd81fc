"""One TFLite model from a verified bundle: raw RGB uint8 in, probabilities (and CAM maps) out."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from device.errors import BundleError
from device.models.bundle import Bundle, load_bundle
from device.models.runtime import make_interpreter

#: The input tensor holds RGB images.
RGB_CHANNELS = 3


def _tensor(det: dict) -> tuple[int, Any, Any]:
    """An output tensor's index, (scale, zero point) and dtype, from the interpreter's details."""
    return det["index"], det["quantization"], det["dtype"]


@dataclass
class RawOutput:
    probabilities: np.ndarray  # float32 (K,), the model's own softmax (before temperature)
    cam: np.ndarray | None  # float32 (h, w, K) class activation logits, if the bundle exports them
    ood_distance: float | None = None  # content check score (convert/content.py), if exported


class TFLiteModel:
    """Wraps an interpreter; checks its tensors against the manifest when created.

    An interpreter is not thread-safe: `predict` holds a lock, so give each worker its own model
    when several threads classify at once.
    """

    def __init__(self, bundle: Bundle, num_threads: int | None = None):
        self.bundle = bundle
        self.manifest = bundle.manifest
        self.interpreter, self.runtime = make_interpreter(str(bundle.model_path), num_threads)
        self.num_threads = num_threads
        self._lock = threading.Lock()
        self._batch = 1  # how many images the input tensor holds (`predict_many(batch=True)` resizes it)
        self._batchable = True  # False once the interpreter refused a batch
        self.invoke_ns = 0  # total time inside interpreter.invoke() (benchmarks: overhead vs inference)
        self._check_input()
        k = len(self.manifest.labels)
        self._prob_idx: int | None = None
        self._cam_idx: int | None = None
        self._dist_idx: int | None = None
        details = self.interpreter.get_output_details()
        by_tensor = {o.tensor_name: o.name for o in self.manifest.outputs if o.tensor_name}
        if by_tensor and all(det["name"] in by_tensor for det in details):
            # Named at conversion (convert/bundle.tflite_outputs): map by tensor name, not by shape.
            self._map_named_outputs(details, by_tensor)
        else:
            self._map_outputs_by_shape(details, k)
        self._check_probability_output(k)

    def _check_input(self) -> None:
        """One input tensor, of the manifest's shape (one RGB image) and dtype."""
        m, path = self.manifest, self.bundle.path
        inputs = self.interpreter.get_input_details()
        if len(inputs) != 1:
            raise BundleError(f"{path}: model has {len(inputs)} inputs, expected 1")
        self._in = inputs[0]
        want = (1, m.input.height, m.input.width, RGB_CHANNELS)
        got = tuple(int(x) for x in self._in["shape"])
        if got != want:
            raise BundleError(f"{path}: input tensor shape is {got}, the manifest says {want}")
        in_dtype = np.dtype(self._in["dtype"]).name
        if in_dtype != m.input.dtype:
            raise BundleError(f"{path}: input dtype is {in_dtype}, the manifest says {m.input.dtype}")

    def _map_named_outputs(self, details: list[dict], by_tensor: dict[str, str]) -> None:
        """Each output tensor's role from the manifest's `tensor_name`s."""
        for det in details:
            role = by_tensor[det["name"]]
            if role == "probabilities":
                self._prob_idx, self._prob_q, self._prob_dtype = _tensor(det)
            elif role == "cam":
                self._cam_idx, self._cam_q, self._cam_dtype = _tensor(det)
            elif role == "ood_distance":
                self._dist_idx, self._dist_q, self._dist_dtype = _tensor(det)

    def _map_outputs_by_shape(self, details: list[dict], k: int) -> None:
        """Outputs without tensor names: (1, K) is the probabilities, (1, h, w, K) the CAM maps."""
        for det in details:
            shape = tuple(int(x) for x in det["shape"])
            if len(shape) == 2:
                if shape[1] != k:
                    raise BundleError(
                        f"{self.bundle.path}: model outputs {shape[1]} classes, the manifest lists {k} labels"
                    )
                self._prob_idx, self._prob_q, self._prob_dtype = _tensor(det)
            elif len(shape) == 4 and shape[-1] == k:
                self._cam_idx, self._cam_q, self._cam_dtype = _tensor(det)

    def _check_probability_output(self, k: int) -> None:
        """The probability output exists and is (1, K), in the model and in the manifest."""
        path = self.bundle.path
        if self._prob_idx is None:
            raise BundleError(f"{path}: model has no (1, {k}) probability output")
        shapes = {
            d["index"]: tuple(int(x) for x in d["shape"]) for d in self.interpreter.get_output_details()
        }
        shape = shapes[self._prob_idx]
        if len(shape) == 2 and shape[0] == 1 and shape[1] != k:
            raise BundleError(f"{path}: model outputs {shape[1]} classes, the manifest lists {k} labels")
        if shape != (1, k):
            raise BundleError(f"{path}: the probability output has shape {shape}, expected (1, {k})")
        spec = self.manifest.output("probabilities")
        if spec and spec.shape and tuple(spec.shape) != (1, k):
            raise BundleError(f"{path}: manifest probability shape {spec.shape} != (1, {k})")

    @classmethod
    def from_dir(cls, path: str, num_threads: int | None = None) -> TFLiteModel:
        return cls(load_bundle(path), num_threads)

    @property
    def has_cam(self) -> bool:
        return self._cam_idx is not None

    @property
    def has_distance(self) -> bool:
        return self._dist_idx is not None

    def distance_max(self) -> float | None:
        """The largest value the quantised ood_distance output can show (None: a float output or none).
        Above it the output saturates, so a content threshold must stay well below it."""
        if self._dist_idx is None or not np.issubdtype(self._dist_dtype, np.integer):
            return None
        scale, zero = self._dist_q
        return (float(np.iinfo(self._dist_dtype).max) - zero) * (scale or 1.0)

    def _dequant(self, arr: np.ndarray, q: tuple[float, int]) -> np.ndarray:
        if arr.dtype.kind in "iu":  # the tensor's own dtype (np.issubdtype costs more than the maths)
            scale, zero = q
            return (arr.astype(np.float32) - zero) * np.float32(scale or 1.0)
        return arr.astype(np.float32)

    def _input(self, rgb: np.ndarray) -> np.ndarray:
        dtype = self._in["dtype"]
        if dtype == np.uint8:
            scale, zero = self._in["quantization"]
            if scale in (0.0, 1.0) and zero == 0:
                return rgb[None]
            q = np.round(rgb.astype(np.float32) / scale + zero)
            return np.clip(q, 0, 255).astype(np.uint8)[None]
        if dtype == np.int8:
            scale, zero = self._in["quantization"]
            q = np.round(rgb.astype(np.float32) / (scale or 1.0) + zero)
            return np.clip(q, -128, 127).astype(np.int8)[None]
        return rgb.astype(np.float32)[None]

    def predict(self, rgb: np.ndarray, *, with_cam: bool = True) -> RawOutput:
        """`rgb` must already be `device.preprocess.prepare`d to the model's size."""
        p, cam, dist = self.predict_many([rgb], with_cam=with_cam)
        return RawOutput(
            p[0], cam[0] if cam is not None else None, float(dist[0]) if dist is not None else None
        )

    def _batch_size(self, n: int) -> None:
        """Resize the input to n images (and re-allocate) when it holds another number; the lock is held."""
        if n != self._batch:
            m = self.manifest.input
            self.interpreter.resize_tensor_input(self._in["index"], [n, m.height, m.width, 3])
            self.interpreter.allocate_tensors()
            self._batch = n

    def predict_many(
        self, xs: Sequence[np.ndarray], *, with_cam: bool = True, batch: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """`predict` on several model-size inputs (a frame's tiles): one invoke each, the raw outputs
        copied out, then dequantised and normalised once for all (per-invoke numpy calls cost about as
        much as a small int8 invoke on a fast CPU). Returns (probabilities (N, K) float32, cams
        (N, h, w, K) float32 or None, distances (N,) float32 or None), as `predict` gives each.
        `batch`: all inputs in one invoke (the input tensor resized to N, re-allocated when N changes);
        a frame's 5-50 cells of a 96 px model measured faster so (`smearscope bench`, `cells.batch`)."""
        m = self.manifest.input
        n = len(xs)
        for x in xs:
            if x.shape != (m.height, m.width, 3) or x.dtype != np.uint8:
                raise ValueError(f"expected uint8 ({m.height}, {m.width}, 3), got {x.dtype} {x.shape}")
        if batch and n > 1 and self._batchable:
            try:
                return self._predict_batch(xs, with_cam=with_cam)
            except (RuntimeError, ValueError):  # a graph with a fixed batch of 1: one invoke per input
                self._batchable = False
                with self._lock:
                    self._batch = -1
                    self._batch_size(1)
        want_cam = with_cam and self.has_cam
        probs = cams = dists = None
        interp = self.interpreter
        with self._lock:
            self._batch_size(1)
            for i, x in enumerate(xs):
                interp.set_tensor(self._in["index"], self._input(x))
                t0 = time.perf_counter_ns()
                interp.invoke()
                self.invoke_ns += time.perf_counter_ns() - t0
                p = interp.get_tensor(self._prob_idx)[0]
                if probs is None:
                    probs = np.empty((n, *p.shape), p.dtype)
                probs[i] = p
                if want_cam:
                    c = interp.get_tensor(self._cam_idx)[0]
                    if cams is None:
                        cams = np.empty((n, *c.shape), c.dtype)
                    cams[i] = c
                if self.has_distance:
                    d = interp.get_tensor(self._dist_idx)[0]
                    if dists is None:
                        dists = np.empty((n, *d.shape), d.dtype)
                    dists[i] = d
        return self._outputs(n, probs, cams, dists)

    def _predict_batch(
        self, xs: Sequence[np.ndarray], *, with_cam: bool
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        interp = self.interpreter
        n = len(xs)
        x = np.concatenate([self._input(x) for x in xs])
        with self._lock:
            self._batch_size(n)
            interp.set_tensor(self._in["index"], x)
            t0 = time.perf_counter_ns()
            interp.invoke()
            self.invoke_ns += time.perf_counter_ns() - t0
            probs = interp.get_tensor(self._prob_idx).copy()
            cams = interp.get_tensor(self._cam_idx).copy() if with_cam and self.has_cam else None
            dists = interp.get_tensor(self._dist_idx).copy() if self.has_distance else None
        return self._outputs(n, probs, cams, dists)

    def _outputs(
        self, n: int, probs: np.ndarray | None, cams: np.ndarray | None, dists: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Raw outputs of n inputs, dequantised; the probabilities clipped and normalised per input."""
        k = len(self.manifest.labels)
        if probs is None:  # no inputs
            return np.empty((0, k), np.float32), None, None
        pf = np.clip(self._dequant(probs, self._prob_q), 0.0, None)
        total = pf.sum(axis=1, keepdims=True)
        pf = np.where(total > 0, pf / np.where(total > 0, total, 1.0), np.float32(1.0 / k)).astype(np.float32)
        cf = self._dequant(cams, self._cam_q) if cams is not None else None
        df = self._dequant(dists, self._dist_q).reshape(n, -1)[:, 0] if dists is not None else None
        return pf, cf, df

    def invoke_only(self, batch: np.ndarray) -> None:
        """Raw interpreter call on an already-built input tensor (benchmarks)."""
        with self._lock:
            self._batch_size(int(batch.shape[0]))
            self.interpreter.set_tensor(self._in["index"], batch)
            self.interpreter.invoke()
