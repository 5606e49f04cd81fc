"""`DetectedCells` → `ClassifiedCells`: each white cell's model input (`device.cells.crop.model_input`)
through the ensemble (calibrated soft vote and its colour, energy and content checks), then the cell's
decision (`device.cells.decide`: a cell the checks find unfamiliar is unclassified). Platelets and
other bodies are kept with their kind and not classified.

The crops of a frame go through `Ensemble.classify_tiles(batch=True)`: one invoke per member for all
of them (LiteRT `resize_tensor_input` to N crops, re-allocated when N changes). On a 96 px MobileNetV2
int8 that measured ~2 ms per cell against ~3.5 ms one invoke per cell, re-allocation included
(`smearscope bench`, `cells.batch`; `benchmarks/results/bench_cells.json`).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from device.cells.crop import model_input
from device.cells.decide import decide
from device.cells.detect import WHITE, Cell
from device.errors import BundleError
from device.models.bundle import CellSpec
from device.models.ensemble import Ensemble
from device.screening.stages import ClassifiedCell, ClassifiedCells, DetectedCells, PreparedFrame


class CellClassifier:
    """The cell classifier of one ensemble (its members cut their crops as the first member says)."""

    def __init__(self, ensemble: Ensemble):
        first = ensemble.models[0].manifest
        if first.cells is None:
            raise BundleError(f"{first.name} is not a cell bundle (its manifest has no cells section)")
        if first.input.um_per_px is None:
            raise BundleError(f"{first.name}: a cell bundle must declare input.um_per_px")
        self.ensemble = ensemble
        self.spec: CellSpec = first.cells
        self.size = int(first.input.width)
        self.input_um_per_px = float(first.input.um_per_px)
        self.labels = ensemble.labels

    def crop(self, prepared: PreparedFrame, cell: Cell) -> np.ndarray:
        """`model_input` of `cell` in the white-referenced frame. The white reference is applied to the
        window the crop reads (per-pixel gains: the same pixels as referencing the whole frame first,
        which costs ~20 ms on 1920x1080); the window holds every frame pixel the crop and its reflected
        border read, so the result is the same as on the whole frame."""
        um = prepared.um_per_px
        assert um is not None
        image = prepared.image
        h, w = image.shape[:2]
        n = max(1, round(self.size * self.input_um_per_px / um))
        x0, y0 = round(cell.x - (n - 1) / 2.0) - 1, round(cell.y - (n - 1) / 2.0) - 1
        # even offsets: `round` halves to even, so only an even shift moves a crop by exactly its size
        wx0, wy0 = min(max(0, x0), w - 1) // 2 * 2, min(max(0, y0), h - 1) // 2 * 2
        wx1, wy1 = max(min(w, x0 + n + 2), wx0 + 1), max(min(h, y0 + n + 2), wy0 + 1)
        window = image[wy0:wy1, wx0:wx1]
        if prepared.white is not None:
            window = prepared.white.apply(window)
        shifted = dataclasses.replace(cell, x=cell.x - wx0, y=cell.y - wy0)
        return model_input(
            window,
            shifted,
            um,
            size=self.size,
            input_um_per_px=self.input_um_per_px,
            pitch_um=self.spec.pitch_um,
        )

    def classify(self, prepared: PreparedFrame, detected: DetectedCells) -> ClassifiedCells:
        t0 = time.perf_counter()
        whites = [i for i, c in enumerate(detected.cells) if c.kind == WHITE]
        crops = [self.crop(prepared, detected.cells[i]) for i in whites]
        t1 = time.perf_counter()
        preds = self.ensemble.classify_tiles(crops, with_cam=False, batch=True) if crops else []
        t2 = time.perf_counter()
        by_index = dict(zip(whites, preds, strict=True))
        out = []
        for i, cell in enumerate(detected.cells):
            pred = by_index.get(i)
            if pred is None:
                out.append(ClassifiedCell(cell, None))
                continue
            unfamiliar = (
                "input unlike the training cells (" + "; ".join(pred.unfamiliar) + ")"
                if pred.unfamiliar
                else None
            )
            decision = decide(pred.probabilities, self.labels, self.spec, unfamiliar=unfamiliar)
            out.append(ClassifiedCell(cell, decision, dict(pred.probabilities), unfamiliar))
        return ClassifiedCells(tuple(out), (t1 - t0) * 1000, (t2 - t1) * 1000)
