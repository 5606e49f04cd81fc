"""`DetectedCells` → `ClassifiedCells`: each white cell's model input (`device.cells.crop.model_input`)
through the ensemble (calibrated soft vote and its colour, energy and content checks), then the cell's
decision (`device.cells.decide`: a cell the checks find unfamiliar is unclassified). Platelets and
other bodies are kept with their kind and not classified.

The crops of a frame go through `Ensemble.classify_tiles`: one invoke per crop, the outputs
post-processed together. A LiteRT batch (`resize_tensor_input` to N crops) is not used: `smearscope
bench` measures both (`cells.batch`) and the per-crop invokes are as fast or faster at 5-50 cells.
"""

from __future__ import annotations

import time

from device.cells.crop import model_input
from device.cells.decide import decide
from device.cells.detect import WHITE
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

    def crop(self, prepared: PreparedFrame, cell):
        assert prepared.um_per_px is not None
        return model_input(
            prepared.rgb,
            cell,
            prepared.um_per_px,
            size=self.size,
            input_um_per_px=self.input_um_per_px,
            pitch_um=self.spec.pitch_um,
        )

    def classify(self, prepared: PreparedFrame, detected: DetectedCells) -> ClassifiedCells:
        t0 = time.perf_counter()
        whites = [i for i, c in enumerate(detected.cells) if c.kind == WHITE]
        crops = [self.crop(prepared, detected.cells[i]) for i in whites]
        t1 = time.perf_counter()
        preds = self.ensemble.classify_tiles(crops, with_cam=False) if crops else []
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
