"""A speed stand-in for a 96 px cell bundle: MobileNetV2 (alpha 1.0, 96 px, random weights), the
shipped structure (image -> backbone -> pool -> dropout -> classifier, CAM output), converted to
full-int8 TFLite with a `cells` section and the 12 cell labels. Its calls mean nothing: it exists so
`smearscope bench` can time the frame → cells → result path where no trained cell bundle is at hand
(the interpreter's cost depends on the architecture and input size, not on the weights).

    python benchmarks/make_cell_speed_bundle.py OUT_DIR [--size 96] [--alpha 1.0]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

#: (id, malignant, white) of the cell classifier's labels
LABELS = (
    ("basophil", False, True),
    ("blast_early", True, True),
    ("blast_pre", True, True),
    ("blast_pro", True, True),
    ("eosinophil", False, True),
    ("erythroblast", False, False),
    ("hematogone", False, True),
    ("ig", False, True),
    ("lymphocyte", False, True),
    ("monocyte", False, True),
    ("neutrophil", False, True),
    ("platelet", False, False),
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--alpha", type=float, default=1.0)
    args = ap.parse_args()
    from make_tiny_bundle import build_model, write_dataset

    from convert.bundle import write_bundle
    from convert.cam import add_cam_output
    from convert.tflite import convert, representative_images

    size = args.size
    model = build_model(size, len(LABELS), alpha=args.alpha, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        items = write_dataset(tmp, 8, size=size)
        rep = representative_images([p for p, _ in items], (size, size), limit=32)
        conv = convert(add_cam_output(model), "int8", rep)
    out = Path(args.out)
    write_bundle(
        out,
        conv.data,
        name=f"cells-speed-mobilenetv2-{size}",
        architecture=f"MobileNetV2 (alpha {args.alpha:g}) {size} px, random weights (speed stand-in)",
        labels=[lb for lb, _, _ in LABELS],
        input_size=(size, size),
        input_dtype=conv.input_dtype,
        um_per_px=0.25,
        provenance={"made_by": "benchmarks/make_cell_speed_bundle.py"},
    )
    path = out / "manifest.json"
    m = json.loads(path.read_text())
    flags = {lb: (mal, white) for lb, mal, white in LABELS}
    for lab in m["labels"]:
        lab["malignant"], lab["white"] = flags[lab["id"]]
    m["cells"] = {"pitch_um": 0.479, "blast_threshold": 0.9, "type_threshold": 0.6}
    path.write_text(json.dumps(m, indent=2) + "\n")
    print(f"wrote {out} (unsigned: a speed stand-in, never a station's model)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
