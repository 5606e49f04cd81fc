"""Model bundles: `model.tflite` + `manifest.json` (+ `MODEL.md`), and their verification.

The manifest is the contract between the model factory (convert/) and the device. The device checks
the file hash and the interpreter's tensor shapes against it before serving, and refuses a bundle
with a message that says exactly what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from common.release import parse_version
from device.errors import BundleError
from device.preprocess import RESIZE_MODES, WHITE_REFERENCES

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
MODEL_FILE = "model.tflite"
#: The scale a bundle may declare for its input, µm per pixel (a plausible microscope range).
UM_PER_PX_RANGE = (0.005, 50.0)
#: The softmax temperature a bundle may declare (unitless); outside it the calibration is broken.
TEMPERATURE_RANGE = (0.05, 20.0)
#: `version`: the UTC time convert wrote the bundle, the order in which releases supersede each other.


def check_plain_name(name: str, *, where: str, what: str) -> str:
    """A file the manifest names is one plain file name inside the bundle: no folder, no separator,
    not absolute, not `.`/`..` (so no manifest can point the device at a file outside its bundle)."""
    if (
        not isinstance(name, str)
        or not name
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or "\x00" in name
        or (len(name) >= 2 and name[1] == ":")
    ):
        raise BundleError(f"{where}: {what} {name!r} is not a plain file name inside the bundle")
    return name


@dataclass(frozen=True)
class Label:
    id: str  # the dataset folder name, e.g. "Pre"
    display: str  # what a person reads, e.g. "Pre-B ALL (malignant)"
    malignant: bool | None = None  # None where the notion does not apply
    #: a cell classifier's label naming a white cell (counted in the differential); False for what is
    #: not one (a platelet, an erythroblast): listed, never counted
    white: bool = True


@dataclass(frozen=True)
class CellSpec:
    """How a cell classifier's bundle reads one cell (present only in cell bundles).

    The crop is the square of `input.width * input.um_per_px` µm around the cell; before it is brought
    to the input size it passes through `pitch_um` µm/px (the softer training source's detail), so a
    sharper camera gives the model no detail it never saw. The decision (`device.cells.decide`): a cell
    is a blast when the summed probability of the blast labels reaches `blast_threshold`, not a blast
    when the rest reaches it, else unclassified; a cell that is not a blast is named by its type when
    that type's share of the non-blast probability reaches `type_threshold`, else counted as a white
    cell whose type is not named.

    The field rule (`device.cells.field`): a field of at least `field_min_cells` read white cells is
    called on their mean blast probability, a blast field at `field_blast_threshold` or above, a field
    without blasts at `field_clear_threshold` or below (and no cell decided a blast); between the two it
    abstains. Both None: the field is called from its cells' decisions alone."""

    pitch_um: float | None = None
    blast_threshold: float = 0.9
    type_threshold: float = 0.6
    field_clear_threshold: float | None = None
    field_blast_threshold: float | None = None
    field_min_cells: int = 3

    @property
    def field_rule(self) -> bool:
        return self.field_clear_threshold is not None and self.field_blast_threshold is not None


@dataclass(frozen=True)
class InputSpec:
    width: int
    height: int
    dtype: str = "uint8"  # raw RGB 0-255; any scaling lives inside the model
    resize: str = "center_crop"
    #: µm per pixel of the training images at the model's input size; None = scale unknown (no rescaling,
    #: no per-frame scale check).
    um_per_px: float | None = None
    #: None = raw camera colour; "background" = background normalised to white (device.preprocess).
    white_reference: str | None = None

    @property
    def size(self) -> tuple[int, int]:
        return (self.width, self.height)


@dataclass(frozen=True)
class OutputSpec:
    name: str  # "probabilities" or "cam"
    shape: tuple[int, ...]
    tensor_name: str | None = None


@dataclass
class Manifest:
    name: str
    architecture: str
    labels: list[Label]
    input: InputSpec
    outputs: list[OutputSpec]
    sha256: str
    schema_version: int = SCHEMA_VERSION
    model_file: str = MODEL_FILE
    quantization: str = "int8"
    temperature: float = 1.0
    abstain_threshold: float = 0.5
    metrics: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    verification: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    #: release order (VERSION_FORMAT); None in bundles made before it existed: see `release_order`
    version: str | None = None
    #: a cell classifier (one white cell per input); None: a field classifier
    cells: CellSpec | None = None
    intended_use: str = (
        "Screening aid for trained laboratory staff. Not a diagnosis: every result must be reviewed "
        "by a qualified hematologist."
    )

    @property
    def label_ids(self) -> list[str]:
        return [lb.id for lb in self.labels]

    def output(self, name: str) -> OutputSpec | None:
        return next((o for o in self.outputs if o.name == name), None)

    @property
    def release_order(self) -> datetime | None:
        """When this release was made, for refusing downgrades: `version`, else (bundles made before
        the field existed) `provenance.converted_at`; None when neither says (order unknown). Both
        live in manifest.json, which the bundle's signature covers."""
        return parse_version(self.version) or parse_version(self.provenance.get("converted_at"))

    @property
    def release_label(self) -> str:
        """The version as people read it (`version`, the conversion time, or "unversioned")."""
        return self.version or str(self.provenance.get("converted_at") or "unversioned")

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "name": self.name,
            "version": self.version,
            "architecture": self.architecture,
            "quantization": self.quantization,
            "model_file": self.model_file,
            "sha256": self.sha256,
            "labels": [_label_dict(lb) for lb in self.labels],
            "input": {
                "width": self.input.width,
                "height": self.input.height,
                "channels": 3,
                "color": "RGB",
                "dtype": self.input.dtype,
                "resize": self.input.resize,
                "um_per_px": self.input.um_per_px,
                "white_reference": self.input.white_reference,
            },
            "outputs": [
                {"name": o.name, "shape": list(o.shape), "tensor_name": o.tensor_name} for o in self.outputs
            ],
            "temperature": self.temperature,
            "abstain_threshold": self.abstain_threshold,
            "calibration": self.calibration,
            "metrics": self.metrics,
            "verification": self.verification,
            "provenance": self.provenance,
            "intended_use": self.intended_use,
        } | ({"cells": asdict(self.cells)} if self.cells is not None else {})

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, where: str = "manifest") -> Manifest:
        schema_version = _need(d, "schema_version", where)
        if schema_version != SCHEMA_VERSION:
            raise BundleError(
                f"{where}: schema_version {schema_version} is not supported (this device reads "
                f"{SCHEMA_VERSION}); update smearscope or re-export the bundle"
            )
        labels = _labels(_need(d, "labels", where), where)
        input_spec = _input_spec(_need(d, "input", where), where)
        outputs = _outputs(_need(d, "outputs", where), where)
        temperature = float(d.get("temperature", 1.0))
        low, high = TEMPERATURE_RANGE
        if not low <= temperature <= high:
            raise BundleError(f"{where}: temperature {temperature} is outside {low:g}..{high:g}")
        model_file = check_plain_name(d.get("model_file", MODEL_FILE), where=where, what="model_file")
        version = d.get("version")
        if version is not None and parse_version(version) is None:
            raise BundleError(f"{where}: version {version!r} is not a UTC time like 2026-12-01T13:37:38Z")
        threshold = float(d.get("abstain_threshold", 0.5))
        if not 0.0 <= threshold < 1.0:
            raise BundleError(f"{where}: abstain_threshold {threshold} is outside 0..1")
        cells = _cell_spec(d.get("cells"), labels, where)
        return cls(
            name=str(_need(d, "name", where)),
            architecture=str(d.get("architecture", "unknown")),
            labels=labels,
            input=input_spec,
            outputs=outputs,
            sha256=str(_need(d, "sha256", where)).lower(),
            schema_version=schema_version,
            model_file=model_file,
            version=version,
            quantization=str(d.get("quantization", "unknown")),
            temperature=temperature,
            abstain_threshold=threshold,
            metrics=dict(d.get("metrics") or {}),
            calibration=dict(d.get("calibration") or {}),
            verification=dict(d.get("verification") or {}),
            provenance=dict(d.get("provenance") or {}),
            intended_use=str(d.get("intended_use") or cls.intended_use),
            cells=cells,
        )


def _need(obj: dict[str, Any], key: str, where: str, ctx: str = "") -> Any:
    """`obj[key]`, or a BundleError naming the missing key (`ctx` prefixes it, e.g. "input.")."""
    if key not in obj:
        raise BundleError(f"{where}: missing key '{ctx}{key}'")
    return obj[key]


def _labels(raw_labels: Any, where: str) -> list[Label]:
    """The manifest's `labels`: plain ids or `{id, display?, malignant?, white?}`, at least two, unique."""
    if not isinstance(raw_labels, list) or len(raw_labels) < 2:
        raise BundleError(f"{where}: 'labels' must list at least two labels")
    labels = []
    for i, lb in enumerate(raw_labels):
        if isinstance(lb, str):
            lb = {"id": lb}
        if not isinstance(lb, dict) or not lb.get("id"):
            raise BundleError(f"{where}: labels[{i}] has no 'id'")
        white = lb.get("white", True)
        if not isinstance(white, bool):
            raise BundleError(f"{where}: labels[{i}].white must be true or false")
        display = str(lb.get("display") or lb["id"])
        labels.append(Label(str(lb["id"]), display, lb.get("malignant"), white))
    if len({lb.id for lb in labels}) != len(labels):
        raise BundleError(f"{where}: label ids are not unique")
    return labels


def _input_spec(inp: dict[str, Any], where: str) -> InputSpec:
    """The manifest's `input`: size, dtype, resize mode, white reference and optional scale."""
    resize = inp.get("resize", "center_crop")
    if resize not in RESIZE_MODES:
        raise BundleError(f"{where}: input.resize {resize!r} is not one of {RESIZE_MODES}")
    white_reference = inp.get("white_reference")
    if white_reference not in WHITE_REFERENCES:
        raise BundleError(
            f"{where}: input.white_reference {white_reference!r} is not one of {WHITE_REFERENCES}"
        )
    um_per_px = inp.get("um_per_px")
    if um_per_px is not None:
        try:
            um_per_px = float(um_per_px)
        except (TypeError, ValueError):
            raise BundleError(f"{where}: input.um_per_px {um_per_px!r} is not a number") from None
        low, high = UM_PER_PX_RANGE
        if not (math.isfinite(um_per_px) and low <= um_per_px <= high):
            raise BundleError(f"{where}: input.um_per_px {um_per_px} is outside {low:g}..{high:g} µm/px")
    return InputSpec(
        int(_need(inp, "width", where, "input.")),
        int(_need(inp, "height", where, "input.")),
        str(inp.get("dtype", "uint8")),
        resize,
        um_per_px,
        white_reference,
    )


def _outputs(raw_outputs: Any, where: str) -> list[OutputSpec]:
    """The manifest's `outputs`; one of them is the `probabilities` tensor."""
    outputs = [
        OutputSpec(str(o["name"]), tuple(int(x) for x in o["shape"]), o.get("tensor_name"))
        for o in raw_outputs
    ]
    if not any(o.name == "probabilities" for o in outputs):
        raise BundleError(f"{where}: 'outputs' has no 'probabilities' entry")
    return outputs


def _label_dict(lb: Label) -> dict[str, Any]:
    out: dict[str, Any] = {"id": lb.id, "display": lb.display, "malignant": lb.malignant}
    if not lb.white:
        out["white"] = False
    return out


def _optional_float(v: Any) -> float | None:
    return None if v is None else float(v)


def _check_field_rule(spec: CellSpec, where: str) -> None:
    lo, hi = spec.field_clear_threshold, spec.field_blast_threshold
    if (lo is None) != (hi is None):
        raise BundleError(f"{where}: cells.field_clear_threshold and field_blast_threshold go together")
    if lo is not None and hi is not None and not (0.0 <= lo <= hi <= 1.0 and math.isfinite(lo + hi)):
        raise BundleError(f"{where}: cells field thresholds {lo}, {hi} must satisfy 0 <= clear <= blast <= 1")
    if spec.field_min_cells < 1:
        raise BundleError(f"{where}: cells.field_min_cells {spec.field_min_cells} must be at least 1")


def _cell_spec(raw: Any, labels: list[Label], where: str) -> CellSpec | None:
    """The manifest's `cells` section; a cell bundle must say which labels are blasts."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise BundleError(f"{where}: 'cells' must be an object")
    try:
        pitch = raw.get("pitch_um")
        spec = CellSpec(
            pitch_um=None if pitch is None else float(pitch),
            blast_threshold=float(raw.get("blast_threshold", CellSpec.blast_threshold)),
            type_threshold=float(raw.get("type_threshold", CellSpec.type_threshold)),
            field_clear_threshold=_optional_float(raw.get("field_clear_threshold")),
            field_blast_threshold=_optional_float(raw.get("field_blast_threshold")),
            field_min_cells=int(raw.get("field_min_cells", CellSpec.field_min_cells)),
        )
    except (TypeError, ValueError):
        raise BundleError(f"{where}: 'cells' holds a value that is not a number") from None
    _check_field_rule(spec, where)
    if spec.pitch_um is not None and not (math.isfinite(spec.pitch_um) and 0.005 <= spec.pitch_um <= 50):
        raise BundleError(f"{where}: cells.pitch_um {spec.pitch_um} is outside 0.005..50 µm/px")
    for key in ("blast_threshold", "type_threshold"):
        v = getattr(spec, key)
        if not 0.5 <= v <= 1.0:
            raise BundleError(f"{where}: cells.{key} {v} is outside 0.5..1")
    undeclared = [lb.id for lb in labels if not isinstance(lb.malignant, bool)]
    if undeclared:
        raise BundleError(f"{where}: a cell bundle must declare whether each label is a blast ({undeclared})")
    if not any(lb.malignant for lb in labels) or all(lb.malignant for lb in labels):
        raise BundleError(f"{where}: a cell bundle needs both blast and non-blast labels")
    return spec


def is_downgrade(new: Manifest, installed: Manifest) -> bool:
    """True when `new` is an older release than `installed`, or cannot be shown to be newer (it has
    no version and the installed one has). Installed bundles without a version order nothing."""
    theirs = installed.release_order
    if theirs is None:
        return False
    ours = new.release_order
    return ours is None or ours < theirs


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass
class Bundle:
    """A bundle on disk whose manifest parsed and whose model file matches its hash."""

    path: Path
    manifest: Manifest

    @property
    def model_path(self) -> Path:
        return self.path / self.manifest.model_file

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def card_path(self) -> Path:
        return self.path / "MODEL.md"


def read_manifest(bundle_dir: str | Path) -> Manifest:
    bundle_dir = Path(bundle_dir)
    mpath = bundle_dir / MANIFEST
    if not bundle_dir.is_dir():
        raise BundleError(f"{bundle_dir}: not a model bundle directory (it does not exist)")
    if mpath.is_symlink():
        raise BundleError(f"{bundle_dir}: {MANIFEST} is a symbolic link; a bundle holds its own files")
    if not mpath.is_file():
        raise BundleError(f"{bundle_dir}: no {MANIFEST} (not a model bundle)")
    try:
        data = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{mpath}: unreadable manifest ({exc})") from exc
    if not isinstance(data, dict):
        raise BundleError(f"{mpath}: manifest must be a JSON object")
    return Manifest.from_dict(data, where=str(mpath))


def load_bundle(bundle_dir: str | Path, *, check_hash: bool = True) -> Bundle:
    """Parse the manifest and check the model file's sha256. Tensor shapes are checked when the
    interpreter is created (device.models.model.TFLiteModel)."""
    bundle_dir = Path(bundle_dir)
    manifest = read_manifest(bundle_dir)
    model = bundle_dir / manifest.model_file
    if model.is_symlink():
        raise BundleError(
            f"{bundle_dir}: {manifest.model_file} is a symbolic link; a bundle holds its own files"
        )
    if not model.is_file():
        raise BundleError(f"{bundle_dir}: model file {manifest.model_file} is missing")
    if model.resolve().parent != bundle_dir.resolve():
        raise BundleError(f"{bundle_dir}: model file {manifest.model_file} resolves outside the bundle")
    if check_hash:
        actual = sha256_file(model)
        if actual != manifest.sha256:
            raise BundleError(
                f"{bundle_dir}: sha256 of {manifest.model_file} is {actual[:12]}…, the manifest says "
                f"{manifest.sha256[:12]}… — the file was changed or corrupted; reinstall the bundle"
            )
    if manifest.input.um_per_px is None:
        log.warning(
            "%s: the manifest has no input.um_per_px: scale unknown (frames are not rescaled and the "
            "per-frame scale check cannot run); re-convert the bundle with --um-per-px",
            bundle_dir,
        )
    return Bundle(bundle_dir, manifest)


def write_manifest(bundle_dir: Path, manifest: Manifest) -> Path:
    """Write manifest.json atomically (temp file + fsync + rename)."""
    from device.fsutil import atomic_write_bytes

    text = json.dumps(manifest.to_dict(), indent=2, sort_keys=False) + "\n"
    path = Path(bundle_dir) / MANIFEST
    atomic_write_bytes(path, text.encode("utf-8"))
    return path


def find_bundles(models_dir: str | Path) -> list[Path]:
    """Every sub-directory of `models_dir` holding a manifest.json, sorted by name."""
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        return []
    return sorted(p for p in models_dir.iterdir() if (p / MANIFEST).is_file())
