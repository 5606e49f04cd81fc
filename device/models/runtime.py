"""Which TFLite interpreter to use: ai_edge_litert, else tflite_runtime, else tensorflow.lite."""

from __future__ import annotations

import importlib
from typing import Any

from device.errors import BundleError

_CANDIDATES = (
    ("ai_edge_litert.interpreter", "ai-edge-litert"),
    ("tflite_runtime.interpreter", "tflite-runtime"),
    ("tensorflow.lite", "tensorflow"),
)


def interpreter_class() -> tuple[type, str]:
    """Return (Interpreter class, runtime name). Raises BundleError naming what to install."""
    errors = []
    for module, name in _CANDIDATES:
        try:
            mod = importlib.import_module(module)
            return mod.Interpreter, name
        except Exception as exc:  # ImportError, or tflite_runtime's numpy-2 ABI failure
            errors.append(f"{name}: {exc.__class__.__name__}: {exc}")
    raise BundleError(
        "no TFLite runtime is installed: `pip install ai-edge-litert` (or tflite-runtime with numpy<2). "
        "Tried " + "; ".join(errors)
    )


def make_interpreter(model_path: str, num_threads: int | None = None) -> tuple[Any, str]:
    cls, name = interpreter_class()
    try:
        interp = cls(model_path=str(model_path), num_threads=num_threads)
        interp.allocate_tensors()
    except Exception as exc:
        raise BundleError(f"{model_path}: the {name} runtime cannot load this model ({exc})") from exc
    return interp, name
