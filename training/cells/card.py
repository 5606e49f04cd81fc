"""The cell classifier's part of a bundle's model card: `python -m training.cells.card BUNDLE... --eval
benchmarks/results/cells_eval.json`.

`convert` writes MODEL.md for any bundle; a cell bundle's card also needs how one cell is read (crop,
pitch, the decision and its thresholds), the figures of the decision on the test split and its cross-lab
copies, the image rule, and the split's caveat. This section sits between two markers and is replaced
on every run (so the card can be renewed); the bundle must be signed again afterwards.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from device.errors import SmearscopeError
from device.fsutil import atomic_write_bytes
from device.models.bundle import read_manifest

BEGIN = "<!-- cells:begin -->"
END = "<!-- cells:end -->"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def section(manifest, doc: dict) -> str:
    spec = manifest.cells
    inp = manifest.input
    side = inp.width * (inp.um_per_px or 0.0)
    ens = doc["variants"]["original"]["ensemble"]["cells"]
    own = doc["variants"]["original"].get(manifest.name, {}).get("cells")
    lines = [
        BEGIN,
        "## Reading one white cell (cell bundle)",
        "",
        "**A screening aid for trained staff, not a diagnosis.** A cell the model is unsure of is "
        '"unclassified" and shown for review; every malignant call goes to a haematologist.',
        "",
        f"- Crop: the square of {side:g} µm around the cell, cut from the WHITE-REFERENCED frame "
        f"(`device.colour`; so `input.white_reference` is null: the crop already is referenced), "
        f"passed through {spec.pitch_um} µm/px (`cells.pitch_um`, the softer training camera's detail), "
        f"then {inp.width} px: `device.cells.crop.model_input`, the function training cut its crops with "
        "(cells at the frame's border included, reflected).",
        f"- Decision (`device.cells.decide`): blast when the blast labels' summed probability reaches "
        f"{spec.blast_threshold} (`cells.blast_threshold`), not a blast when the rest reaches it, else "
        f"unclassified; a non-blast cell is named when its type holds {spec.type_threshold} of the "
        f"non-blast probability (`cells.type_threshold`), else counted as an unnamed white cell. Platelets "
        "and erythroblasts are named but not white cells (labels' `white: false`).",
        *(
            [
                f"- Field (`device.cells.field`): a field of at least {spec.field_min_cells} familiar white "
                f"cells is a blast field when their mean blast probability reaches "
                f"{spec.field_blast_threshold} (`cells.field_blast_threshold`), a field without blasts at "
                f"or below {spec.field_clear_threshold} (`cells.field_clear_threshold`) when no cell is "
                "decided a blast, else uncertain; a smaller field is called by its cells' decisions. In a "
                "called field an unclassified cell leaning the field's way is counted with it; the slide "
                "is called from the count.",
            ]
            if spec.field_rule
            else []
        ),
        "- The thresholds were chosen on the VALIDATION split (`training.cells.calibrate_cells`), for the "
        "default ensemble of the two cell bundles (both carry the same `cells` section).",
        "",
        "Test split, per cell, int8 (`benchmarks/results/cells_eval.md`; ensemble = "
        f"{', '.join(doc['models'])}):",
        "",
        "| figure | ensemble | this model alone |",
        "| --- | --- | --- |",
    ]
    rows = [
        ("blast sensitivity (decided cells)", "blast_sensitivity_decided"),
        ("blast specificity (decided cells)", "blast_specificity_decided"),
        ("confidently wrong (blast / not blast)", "confidently_wrong"),
        ("wrong type name", "wrong_name"),
        ("macro-F1, 8 normal types (decision)", "macro_f1_normal_decision"),
    ]
    for name, key in rows:
        a = ens[key]
        b = own[key] if own else None
        fmt = (lambda v: "-" if v is None else f"{v:.4f}") if "f1" in key else _pct
        lines.append(f"| {name} | {fmt(a)} | {fmt(b)} |")
    lines.append(
        f"| unclassified | {_pct(ens['states']['unclassified'])} | "
        f"{_pct(own['states']['unclassified']) if own else '-'} |"
    )
    fields = doc.get("fields")
    if fields:
        t = fields["test"]
        four = t.get("four_class_right")
        lines += [
            "",
            f"B-ALL images called by the station ({fields['rule']}): {t['n']} test images, right "
            f"{_pct(t['accuracy'])}, uncertain {_pct(t['uncertain_rate'])}, confidently wrong "
            f"{_pct(t['wrong_rate'])}"
            + (f"; right with the subtype (4-class) {_pct(four / t['n'])}." if four is not None else "."),
        ]
    normal = (doc.get("normal_fields") or {}).get("original")
    if normal:
        lines += [
            "",
            f"Normal fields of 3-12 of the other lab's test cells ({normal['n']} drawn): called a blast "
            f"field {_pct(normal['called_blast'])}, uncertain {_pct(normal['uncertain'])}.",
        ]
    cross = []
    for v in ("colour_to_other", "to_other_lab"):
        r = doc["variants"].get(v, {}).get("ensemble")
        if r:
            c = r["cells"]
            cross.append(
                f"`{v}`: confident blast on normal cells {_pct(c['confident_blast_on_normal'])}, blasts "
                f"decided not a blast {_pct(c['blast_called_not_blast'])}, unclassified "
                f"{_pct(c['states']['unclassified'])}"
            )
    if cross:
        lines += ["", "Cross-lab copies of the test crops (ensemble): " + "; ".join(cross) + "."]
    lines += [
        "",
        "Caveats: the split is per source image (no patient ids), so one patient's images can sit on both "
        "sides: the figures are optimistic for new patients. B-ALL cell labels are weak (every white cell "
        "of a field gets the field's class), the normal cells come from another lab (PBC), and the "
        "cross-lab figures are simulated (colour transfer, sharpening), not other labs' slides."
        + (
            " The field rule's margin was widened after a first reading of the test fields "
            "(docs/cells-training.md), so the field figures are a second reading, not blind."
            if spec.field_rule
            else ""
        ),
        END,
    ]
    return "\n".join(lines) + "\n"


def write_card(bundle: Path, doc: dict) -> None:
    manifest = read_manifest(bundle)
    if manifest.cells is None:
        raise SmearscopeError(f"{bundle}: not a cell bundle (no cells section)")
    card = bundle / "MODEL.md"
    text = card.read_text(encoding="utf-8") if card.is_file() else f"# Model card: `{manifest.name}`\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + rest.split(END, 1)[1].lstrip("\n")
    text = text.rstrip("\n") + "\n\n" + section(manifest, doc)
    atomic_write_bytes(card, text.encode("utf-8"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.cells.card", description=__doc__.split("\n")[0])
    p.add_argument("bundle", nargs="+")
    p.add_argument("--eval", required=True, help="training.cells.evaluate's JSON")
    args = p.parse_args(argv)
    try:
        doc = json.loads(Path(args.eval).read_text())
        for b in args.bundle:
            write_card(Path(b), doc)
    except (SmearscopeError, OSError, KeyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
