"""A second reading of a field its cells leave uncertain: the field models read the whole field.

The cell classifier judges one white cell at a time, and one hematogone looks like one blast; the field
rule (`device.cells.field`) pools a field's cells, but a field of few cells, or of cells whose mean sits
between its thresholds, stays uncertain. The field models (bundles without a `cells` section, trained
on whole B-ALL fields: tiles of 107 µm) see what the cells' crops cut away: how the cells of a field
vary against each other, the chromatin beside the background. On the fields the cells leave uncertain
they are a second reader, never the first:

- only a COUNTED field the cells called uncertain is read again (a refused frame, a field without
  white cells, or a field the cells called stays as it is);
- the field models' own checks stay in force: a field they refuse (too small for a tile, scale) or
  abstain on (unfamiliar, unsure, members disagree) leaves the field uncertain;
- their "malignant" (every confident tile malignant, whichever subtype: the subtype never decides the
  screen) calls the field a blast field (a referral: the safe side);
- when they abstain but lean malignant, and the cells' mean blast probability reaches the field rule's
  blast threshold (a field of fewer cells than the rule needs), the two readers together call it a
  blast field;
- their "not malignant" clears the field only when no white cell is decided a blast and the cells'
  mean blast probability stays below the field rule's blast threshold: a blast is never outvoted.

The record keeps the cells' own labels (the field's label is the cells' blast label, or white type,
of the highest mean probability); the field models' label is shown as the reading's, for information.
The slide's count is the cells' and is not changed by a second reading.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from device.cells.count import UNCLASSIFIED
from device.cells.decide import BLAST
from device.errors import BundleError
from device.models.bundle import CellSpec, Label
from device.models.ensemble import Ensemble
from device.models.signing import SignaturePolicy
from device.optics.analyse import AcquisitionSettings, FieldClassifier
from device.paths import default_bundle_dirs, second_reading_dirs
from device.screening.stages import COUNTED, MALIGNANT, NOT_MALIGNANT, NOT_READ, FieldCells, SecondReading

if TYPE_CHECKING:
    from device.config import Config


class FieldReader:
    """The field models of the second reading (an ensemble of field bundles)."""

    def __init__(self, ensemble: Ensemble, settings: AcquisitionSettings | None = None):
        if any(m.manifest.cells is not None for m in ensemble.models):
            raise BundleError("second reading: its bundles must be field bundles (without a cells section)")
        self.settings = settings or AcquisitionSettings()
        # the cell path has checked the frame's scale already
        settings = dataclasses.replace(self.settings, scale_check=False)
        self.ensemble = ensemble
        self.classifier = FieldClassifier(ensemble, settings)
        self.malignant = {lb.id for lb in ensemble.labels if lb.malignant}
        self.display = {lb.id: lb.display for lb in ensemble.labels}

    def copy(self, threads: int = 1) -> FieldReader:
        """The same reader on interpreters of its own (for another thread)."""
        e = self.ensemble
        ensemble = Ensemble.from_dirs(
            [m.bundle.path for m in e.models],
            num_threads=threads,
            threshold=e.threshold,
            abstain_on_disagreement=e.abstain_on_disagreement,
        )
        return FieldReader(ensemble, self.settings)

    def read(self, field: FieldCells) -> SecondReading:
        t0 = time.perf_counter()
        p = field.prepared
        names = tuple(self.ensemble.names)
        analysis = self.classifier.analyse(p.image, p.um_per_px, source="given")
        ms = (time.perf_counter() - t0) * 1000
        fr, pred = analysis.field, analysis.prediction
        if fr.state in ("refused", "no_cells") or fr.label is None:
            why = f"field models: {fr.reason or fr.display}"
            return SecondReading(names, NOT_READ, None, None, 0.0, why, ms=ms)
        shown = self.display.get(fr.label, fr.label)
        confident = [t for t in fr.tiles if not t.abstained]
        if confident and all(t.label in self.malignant for t in confident):
            # malignant in every confident tile: a blast field whichever subtype (the subtype is
            # information and never decides the screen; the field rule abstains on mixed subtypes)
            conf = max(sum(t.probabilities.get(m, 0.0) for m in self.malignant) for t in confident)
            return SecondReading(names, MALIGNANT, fr.label, shown, conf, None, ms=ms)
        malignant_p = sum(fr.probabilities.get(m, 0.0) for m in self.malignant)
        leaning = MALIGNANT if malignant_p >= 0.5 else NOT_MALIGNANT
        if pred.abstained:
            why = f"field models: {pred.reason or fr.reason or 'uncertain'}"
            return SecondReading(
                names, NOT_READ, fr.label, shown, pred.confidence, why, leaning=leaning, ms=ms
            )
        state = MALIGNANT if fr.label in self.malignant else NOT_MALIGNANT
        return SecondReading(names, state, fr.label, shown, pred.confidence, None, ms=ms)


def needs_second_reading(field: FieldCells) -> bool:
    return field.state == COUNTED and field.abstained


def with_second_reading(
    field: FieldCells, reading: SecondReading, labels: list[Label], spec: CellSpec | None
) -> FieldCells:
    """`field` called by `reading` where the module's rule lets it, else `field` with the reading
    attached (undecided)."""
    if reading.state == NOT_READ and reading.leaning == MALIGNANT:
        both = _both_lean_blast(field, spec)
        if both is not None:
            reading = dataclasses.replace(reading, state=MALIGNANT, reason=both)
    if reading.state == MALIGNANT:
        blast_ids = [lb.id for lb in labels if lb.malignant]
        label = max(blast_ids, key=lambda i: field.probabilities.get(i, 0.0)) if blast_ids else field.label
        decided = dataclasses.replace(reading, decided=True)
        return dataclasses.replace(
            field, label=label, abstained=False, reason=None, confidence=reading.confidence, second=decided
        )
    if reading.state == NOT_MALIGNANT:
        veto = _clear_veto(field, spec)
        if veto is not None:
            return dataclasses.replace(field, second=dataclasses.replace(reading, reason=veto))
        label = field.label
        if label == UNCLASSIFIED or label is None:
            others = [lb.id for lb in labels if lb.white and not lb.malignant]
            label = max(others, key=lambda i: field.probabilities.get(i, 0.0)) if others else UNCLASSIFIED
        decided = dataclasses.replace(reading, decided=True)
        return dataclasses.replace(
            field, label=label, abstained=False, reason=None, confidence=reading.confidence, second=decided
        )
    return dataclasses.replace(field, second=reading)


def _both_lean_blast(field: FieldCells, spec: CellSpec | None) -> str | None:
    """Why two readers that each lean blast call the field a blast field together (None: they do
    not): the field models lean malignant without calling it (unfamiliar, unsure), and the cells'
    mean blast probability reaches the field rule's blast threshold, though the field has fewer cells
    than the rule needs."""
    ev = field.evidence
    limit = spec.field_blast_threshold if spec is not None else None
    if ev is None or limit is None or ev.p_blast < limit:
        return None
    return (
        f"the field models lean malignant and the cells' mean blast probability {ev.p_blast:.2f} "
        f"reaches {limit:.2f}: both readers lean blast"
    )


def _clear_veto(field: FieldCells, spec: CellSpec | None) -> str | None:
    """Why a "not malignant" reading may not clear `field` (None: it may)."""
    blasts = sum(r.state == BLAST for r in field.white_records)
    if blasts:
        return f"not cleared: {blasts} white cell(s) decided a blast"
    ev = field.evidence
    limit = spec.field_blast_threshold if spec is not None else None
    if ev is not None and limit is not None and ev.p_blast >= limit:
        return f"not cleared: the cells' mean blast probability {ev.p_blast:.2f} reaches {limit:.2f}"
    return None


def reader_dirs(config: Config, cell_dirs: Sequence[str | Path]) -> list[Path]:
    """The second reader's bundles for the cell ensemble of `cell_dirs`: `[cells] second_reading_models`
    when set; else, for the shipped cell ensemble (the bundles of models/DEFAULT), those of
    models/SECOND_READING (the field models paired with it); else none. None at all when `[cells]
    second_reading` is off."""
    cells = config.cells
    if not cells.second_reading:
        return []
    if cells.second_reading_models:
        return [Path(d) for d in cells.second_reading_models]
    shipped = sorted(p.resolve() for p in default_bundle_dirs())
    if sorted(Path(d).resolve() for d in cell_dirs) == shipped:
        return second_reading_dirs()
    return []


def load_reader(
    config: Config, cell_dirs: Sequence[str | Path], threads: int | None = None
) -> FieldReader | None:
    """The second reader of `config` (None: switched off or no bundle named). Its bundles pass the
    same signature policy as the station's own (`[models] trusted_keys`, `allow_unsigned`); a bad or
    missing bundle raises BundleError, as the station's own would."""
    dirs = reader_dirs(config, cell_dirs)
    if not dirs:
        return None
    for d in dirs:
        if not d.is_dir():
            raise BundleError(f"second reading: no bundle at {d} ([cells] second_reading_models)")
    SignaturePolicy.from_config(config).check(dirs)
    ensemble = Ensemble.configured(dirs, config.classifier, threads)
    return FieldReader(ensemble, AcquisitionSettings.from_config(config))
