"""The whole frame → cells → result path (`screen_frame`), the stages' runner (`CellScreen`) and which
kind of ensemble is loaded (`ensemble_kind`: cell bundles and field bundles are never mixed)."""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from device.cells.decide import UNCLASSIFIED, CellDecision
from device.cells.detect import WHITE, detect_cells
from device.errors import BundleError
from device.models.ensemble import Ensemble
from device.optics.analyse import ScaleArg
from device.optics.scalecheck import Estimator, ScaleCheck
from device.screening.classify import CellClassifier
from device.screening.detail import Detail, measure_detail
from device.screening.prepare import prepare_frame
from device.screening.result import field_result, refused_result
from device.screening.second import FieldReader, needs_second_reading, with_second_reading
from device.screening.stages import (
    COUNTED,
    ClassifiedCell,
    ClassifiedCells,
    DetectedCells,
    FieldCells,
    PreparedFrame,
    ScreenSettings,
)

CELLS = "cells"
FIELD = "field"


def ensemble_kind(ensemble: Ensemble) -> str:
    """CELLS when every member is a cell bundle, FIELD when none is; a mix is refused (BundleError)."""
    kinds = {m.manifest.name: m.manifest.cells is not None for m in ensemble.models}
    if all(kinds.values()):
        return CELLS
    if not any(kinds.values()):
        return FIELD
    cells = sorted(n for n, k in kinds.items() if k)
    fields = sorted(n for n, k in kinds.items() if not k)
    raise BundleError(
        f"the ensemble mixes cell bundles ({', '.join(cells)}) with field bundles ({', '.join(fields)}): "
        "serve one kind (edit [classifier] models or models/DEFAULT)"
    )


class CellScreen:
    """The stages for one cell ensemble; the live pipeline calls them on its own threads."""

    def __init__(
        self,
        ensemble: Ensemble,
        settings: ScreenSettings | None = None,
        *,
        estimator: Estimator | None = None,
        reader: FieldReader | None = None,
    ):
        self.ensemble = ensemble
        self.settings = settings or ScreenSettings()
        self.estimator = estimator
        self.classifier = CellClassifier(ensemble)
        self.reader = reader  # the second reading of fields the cells leave uncertain

    def prepare(
        self, rgb: np.ndarray, scale: ScaleArg, *, source: str = "given", check: ScaleCheck | None = None
    ) -> PreparedFrame:
        return prepare_frame(rgb, scale, self.settings, source=source, estimator=self.estimator, check=check)

    def detect(self, prepared: PreparedFrame) -> DetectedCells:
        assert prepared.um_per_px is not None and prepared.refused is None
        t0 = time.perf_counter()
        cells = detect_cells(prepared.image, prepared.um_per_px)
        return DetectedCells(tuple(cells), (time.perf_counter() - t0) * 1000)

    def result(self, prepared: PreparedFrame) -> FieldCells:
        """Detection, classification and the field's result of a prepared frame (a refused frame's
        result when it was refused)."""
        if prepared.refused is not None:
            return refused_result(prepared)
        detected = self.detect(prepared)
        # measured before the classifier: a field whose detail it cannot read costs no inference
        detail = self.detail(prepared) if detected.white else None
        if detail is not None and detail.problem:
            classified = unread(detected, detail.problem)
        else:
            classified = self.classifier.classify(prepared, detected)
        labels = self.ensemble.labels
        spec = self.classifier.spec
        field = field_result(prepared, detected, classified, labels, self.settings, spec)
        if detail is not None:
            field = dataclasses.replace(field, detail=detail)
            if detail.problem and field.state == COUNTED:
                return dataclasses.replace(field, abstained=True, reason=detail.problem)
        if self.reader is not None and needs_second_reading(field):
            field = with_second_reading(field, self.reader.read(field), list(labels), spec)
        return field

    def detail(self, prepared: PreparedFrame) -> Detail | None:
        """The frame's noise and JPEG blocks against `[quality] max_noise`, `max_blockiness` (None: the
        quality gate is off)."""
        s = self.settings
        if not s.detail_check or prepared.um_per_px is None:
            return None
        return measure_detail(
            prepared.image,
            prepared.um_per_px,
            self.classifier.spec.pitch_um,
            max_noise=s.max_noise,
            max_blockiness=s.max_blockiness,
        )

    def screen(self, rgb: np.ndarray, scale: ScaleArg, *, source: str = "given") -> FieldCells:
        return self.result(self.prepare(rgb, scale, source=source))


def unread(detected: DetectedCells, why: str) -> ClassifiedCells:
    """Every white cell unclassified for `why`, without the classifier (a frame whose detail it cannot
    read): such cells are listed and counted apart, never as read, and never pooled by the field rule;
    other bodies are kept with their kind, as `CellClassifier.classify` keeps them."""
    unclassified = CellDecision(UNCLASSIFIED, None, 0.0, 0.0, why)
    return ClassifiedCells(
        tuple(
            ClassifiedCell(c, unclassified, {}, why) if c.kind == WHITE else ClassifiedCell(c, None)
            for c in detected.cells
        )
    )


def screen_frame(
    rgb: np.ndarray,
    scale: ScaleArg,
    ensemble: Ensemble,
    settings: ScreenSettings | None = None,
    *,
    source: str = "given",
    estimator: Estimator | None = None,
    reader: FieldReader | None = None,
) -> FieldCells:
    """One RGB uint8 frame → its `FieldCells`. `scale`: the frame's µm/px (`source` "given" or
    "profile:<name>"), "auto" or None (both: from the red cells)."""
    return CellScreen(ensemble, settings, estimator=estimator, reader=reader).screen(
        rgb, scale, source=source
    )
