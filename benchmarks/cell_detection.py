"""White-cell detection (device/cells/detect.py): recall, precision and speed.

    .venv/bin/python benchmarks/cell_detection.py [--shared DIR] [--per-type 60] [--fields 40]

(a) Composite fields with known cell positions. Cells come from the PBC normal-cell dataset (one named
    cell at each image's centre): a disc around the centre (radius = the type's usual radius + 1 µm,
    feathered over 1 µm) is rescaled to the field's µm/px and pasted at a known place. Backgrounds are
    mosaics of 12 µm squares cut from PBC image corners where the nucleus map (device/optics/nuclei.py,
    a separate, earlier test) finds no purple body above 3 µm² (real red cells and plasma, randomly
    flipped; the pink red cells' rims still pass its pixel test here and there). A 120 x 90 µm field
    has 12 slots; each holds one cell (60%), a touching pair (25%: centres one sum of radii apart) or
    an overlapping pair (15%: 0.75 of it). Fields are made at 0.48 and 0.2 µm/px. A detection matches
    a pasted cell when its centre is within `MATCH_UM` µm (greedy, nearest first, one to one).
    Recall per type = matched with the expected kind (platelets: "platelet"; all other types,
    erythroblasts included: "white") / pasted. White precision = white detections matched to a pasted
    non-platelet cell / all white detections (a cell the disc's fringe brought along counts against it).
(b) PBC images as they are (their scale measured with device/optics/scale.py) and shrunk to 0.48 µm/px:
    the centre cell found with the expected kind within `MATCH_UM`; white detections besides it.
(c) B-ALL images (all-4class, 0.479 µm/px): white cells per image per class, and an overlay contact
    sheet of 24 images (green white, orange platelet, red other) to check by eye.
(d) Speed: detect_cells on a composited 1920 x 1080 frame at 0.19 µm/px with 5, 20 and 50 cells, beside
    one invoke of the shipped MobileNetV2 int8 (1 thread) on the same machine.
(e) The composite fields of (a) at 0.48 µm/px again, each rendered through the acquisition shifts of
    benchmarks/robustness.py (white balance, camera gain and offset, gamma, blur, noise, JPEG,
    vignetting, stain; mild and strong): white-cell recall and precision as in (a), per shift.

Writes benchmarks/results/cell_detection.json, .md and cell_detection_sheet.png.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from device.cells.detect import OTHER, PLATELET, WHITE, Cell, detect_cells  # noqa: E402
from device.optics.nuclei import NucleusThresholds, find_nuclei  # noqa: E402
from device.optics.scale import estimate_scale  # noqa: E402
from device.preprocess import read_image  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
PBC_TYPES = (
    "basophil",
    "eosinophil",
    "erythroblast",
    "ig",
    "lymphocyte",
    "monocyte",
    "neutrophil",
    "platelet",
)
#: Usual radius (µm) of each type (half the textbook diameter); the pasted disc is 1 µm larger. The PBC
#: platelet images show large platelets (22-45 µm² of purple at the measured scale, 5-7 µm across), so
#: theirs is 3 µm, not the textbook 1-1.5: the whole body is pasted.
RADIUS_UM = {
    "basophil": 6.0,
    "eosinophil": 6.5,
    "erythroblast": 5.0,
    "ig": 7.0,
    "lymphocyte": 5.0,
    "monocyte": 8.0,
    "neutrophil": 6.0,
    "platelet": 3.0,
}
EXPECTED = {t: (PLATELET if t == "platelet" else WHITE) for t in PBC_TYPES}
MATCH_UM = 4.0
#: The shifts of benchmarks/robustness.py that (e) renders (scale and rotation are not the detector's:
#: the station measures the scale, and the detector has no orientation).
SHIFTED = ("white_balance", "camera", "gamma", "blur", "noise", "jpeg", "vignetting", "stain")
B_ALL_UM = 0.479
FIELD_UM = (120.0, 90.0)


def _shared(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    for cand in (ROOT.parent / "shared", ROOT.parents[1] / "shared"):
        if (cand / "datasets").is_dir():
            return cand
    raise SystemExit("no ../shared/datasets: pass --shared")


def _resize(rgb: np.ndarray, factor: float) -> np.ndarray:
    if abs(factor - 1.0) < 1e-6:
        return rgb
    size = (max(1, round(rgb.shape[1] * factor)), max(1, round(rgb.shape[0] * factor)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)


# --- PBC scale ------------------------------------------------------------------------------------


def pbc_scale(pbc: Path, per_type: int = 12) -> dict:
    vals = []
    for t in PBC_TYPES:
        for f in sorted((pbc / t).glob("*.jpg"))[:per_type]:
            est = estimate_scale(read_image(f))
            if est.confident and est.um_per_px() is not None:
                vals.append(float(est.um_per_px()))
    q = np.percentile(vals, [10, 25, 50, 75, 90])
    return {
        "n_images": per_type * len(PBC_TYPES),
        "n_confident": len(vals),
        "percentiles_10_25_50_75_90": q.tolist(),
    }


# --- composite fields -----------------------------------------------------------------------------


@dataclass
class Sprite:
    kind: str  # PBC type
    rgb: np.ndarray  # square around the cell at the target scale
    alpha: np.ndarray  # float32 0..1
    radius_um: float


@dataclass
class Truth:
    x: float  # px
    y: float
    kind: str
    layout: str  # single | touching | overlapping
    pair: int  # -1 for a single


def make_sprite(rgb: np.ndarray, kind: str, src_um: float, um: float) -> Sprite:
    f = src_um / um
    h, w = rgb.shape[:2]
    r_um = RADIUS_UM[kind]
    half = int(np.ceil((r_um + 2.0) / um))
    small = _resize(rgb, f)
    cx, cy = ((w - 1) / 2 + 0.5) * f - 0.5, ((h - 1) / 2 + 0.5) * f - 0.5
    x0, y0 = round(cx) - half, round(cy) - half
    pad = cv2.copyMakeBorder(small, half, half, half, half, cv2.BORDER_REFLECT_101)
    patch = pad[y0 + half : y0 + 3 * half + 1, x0 + half : x0 + 3 * half + 1]
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float32)
    # sub-pixel offset of the true centre inside the patch
    dist = np.hypot(xx - (cx - round(cx)), yy - (cy - round(cy))) * um
    alpha = np.clip((r_um + 1.0 + 0.5 - dist) / 1.0, 0.0, 1.0).astype(np.float32)
    return Sprite(kind, np.ascontiguousarray(patch), alpha, r_um)


def background_squares(pbc: Path, src_um: float, um: float, n_images: int) -> list[np.ndarray]:
    side = round(12.0 / um)  # corners of a 39 µm image: clear of a centred cell up to 15 µm across
    out = []
    t = NucleusThresholds(min_area_um2=3.0)  # no purple body bigger than a small platelet
    for kind in ("lymphocyte", "neutrophil", "monocyte", "eosinophil"):
        for f in sorted((pbc / kind).glob("*.jpg"))[-n_images:]:
            small = _resize(read_image(f), src_um / um)
            h, w = small.shape[:2]
            for y0, x0 in ((0, 0), (0, w - side), (h - side, 0), (h - side, w - side)):
                sq = small[y0 : y0 + side, x0 : x0 + side]
                if sq.shape[:2] == (side, side) and find_nuclei(sq, um, t).n_cells == 0:
                    out.append(np.ascontiguousarray(sq))
    return out


def compose_field(
    rng: np.random.Generator,
    sprites: dict[str, list[Sprite]],
    squares: list[np.ndarray],
    um: float,
    size_um: tuple[float, float],
    n_slots: int | None = None,
) -> tuple[np.ndarray, list[Truth]]:
    w, h = round(size_um[0] / um), round(size_um[1] / um)
    side = squares[0].shape[0]
    bg = np.zeros((h + side, w + side, 3), np.uint8)
    for y in range(0, h, side):
        for x in range(0, w, side):
            sq = squares[rng.integers(len(squares))]
            sq = sq[:: rng.choice([-1, 1]), :: rng.choice([-1, 1])]
            bg[y : y + side, x : x + side] = sq
    img = bg[:h, :w].astype(np.float32)
    slot = 30.0
    slots = [
        (sx, sy)
        for sy in np.arange(slot / 2, size_um[1], slot)
        for sx in np.arange(slot / 2, size_um[0], slot)
    ]
    if n_slots is not None:
        slots = [slots[i] for i in sorted(rng.choice(len(slots), n_slots, replace=False))]
    truths: list[Truth] = []
    pair_id = 0
    for sx, sy in slots:
        cx, cy = sx + rng.uniform(-3, 3), sy + rng.uniform(-3, 3)
        roll = rng.random() if n_slots is None else 0.0
        picks = [sprites[t][rng.integers(len(sprites[t]))] for t in rng.choice(PBC_TYPES, 2)]
        if roll < 0.6:
            placed = [(picks[0], cx, cy, "single", -1)]
        else:
            layout = "touching" if roll < 0.85 else "overlapping"
            d = (picks[0].radius_um + picks[1].radius_um) * (1.0 if layout == "touching" else 0.75)
            a = rng.uniform(0, np.pi)
            dx, dy = np.cos(a) * d / 2, np.sin(a) * d / 2
            placed = [
                (picks[0], cx - dx, cy - dy, layout, pair_id),
                (picks[1], cx + dx, cy + dy, layout, pair_id),
            ]
            pair_id += 1
        for sp, x_um, y_um, layout, pid in placed:
            x, y = x_um / um, y_um / um
            _paste(img, sp, x, y)
            truths.append(Truth(x, y, sp.kind, layout, pid))
    return np.clip(img, 0, 255).astype(np.uint8), truths


def _paste(img: np.ndarray, sp: Sprite, x: float, y: float) -> None:
    half = sp.rgb.shape[0] // 2
    ix, iy = round(x), round(y)
    h, w = img.shape[:2]
    x0, y0, x1, y1 = ix - half, iy - half, ix + half + 1, iy + half + 1
    cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if cx1 <= cx0 or cy1 <= cy0:
        return
    src = sp.rgb[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0].astype(np.float32)
    a = sp.alpha[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0, None]
    img[cy0:cy1, cx0:cx1] = img[cy0:cy1, cx0:cx1] * (1 - a) + src * a


def match(truths: list[Truth], cells: list[Cell], tol_px: float) -> dict[int, int]:
    """truth index -> cell index, greedy nearest first, one to one, within tol_px."""
    pairs = []
    for i, t in enumerate(truths):
        for j, c in enumerate(cells):
            d = float(np.hypot(c.x - t.x, c.y - t.y))
            if d <= tol_px:
                pairs.append((d, i, j))
    used_t: dict[int, int] = {}
    used_c: set[int] = set()
    for _, i, j in sorted(pairs):
        if i not in used_t and j not in used_c:
            used_t[i] = j
            used_c.add(j)
    return used_t


def composite_material(pbc: Path, src_um: float, um: float, per_type: int) -> tuple[dict, list[np.ndarray]]:
    """(the sprites of `per_type` PBC images per type, the background squares) at `um` µm/px."""
    sprites = {
        t: [make_sprite(read_image(f), t, src_um, um) for f in sorted((pbc / t).glob("*.jpg"))[:per_type]]
        for t in PBC_TYPES
    }
    return sprites, background_squares(pbc, src_um, um, 40)


def composite_eval(pbc: Path, src_um: float, um: float, per_type: int, fields: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    sprites, squares = composite_material(pbc, src_um, um, per_type)
    per_type_stats = {t: {"n": 0, WHITE: 0, PLATELET: 0, OTHER: 0, "missed": 0} for t in PBC_TYPES}
    layouts = {k: {"n": 0, "found": 0} for k in ("single", "touching", "overlapping")}
    pairs_ww = {k: {"pairs": 0, "both_found": 0} for k in ("touching", "overlapping")}
    white_det = white_tp = plt_det = plt_tp = white_on_platelet = 0
    errors: list[float] = []
    for _ in range(fields):
        img, truths = compose_field(rng, sprites, squares, um, FIELD_UM)
        cells = detect_cells(img, um)
        m = match(truths, cells, MATCH_UM / um)
        errors += [
            float(np.hypot(cells[j].x - truths[i].x, cells[j].y - truths[i].y)) * um
            for i, j in m.items()
            if cells[j].kind == WHITE and EXPECTED[truths[i].kind] == WHITE
        ]
        for i, t in enumerate(truths):
            s = per_type_stats[t.kind]
            s["n"] += 1
            kind = cells[m[i]].kind if i in m else "missed"
            s[kind] += 1
            layouts[t.layout]["n"] += 1
            layouts[t.layout]["found"] += int(kind == EXPECTED[t.kind])
        matched_kind = {j: truths[i].kind for i, j in m.items()}
        for j, c in enumerate(cells):
            if c.kind == WHITE:
                white_det += 1
                white_tp += int(j in matched_kind and EXPECTED[matched_kind[j]] == WHITE)
                white_on_platelet += int(j in matched_kind and matched_kind[j] == "platelet")
            elif c.kind == PLATELET:
                plt_det += 1
                plt_tp += int(j in matched_kind and matched_kind[j] == "platelet")
        by_pair: dict[int, list[int]] = {}
        for i, t in enumerate(truths):
            if t.pair >= 0 and EXPECTED[t.kind] == WHITE:
                by_pair.setdefault(t.pair, []).append(i)
        for members in by_pair.values():
            if len(members) == 2:
                lay = truths[members[0]].layout
                pairs_ww[lay]["pairs"] += 1
                pairs_ww[lay]["both_found"] += int(all(i in m and cells[m[i]].kind == WHITE for i in members))
    for s in per_type_stats.values():
        s["recall"] = None
    for t, s in per_type_stats.items():
        s["recall"] = round(s[EXPECTED[t]] / s["n"], 3) if s["n"] else None
    n_white = sum(s["n"] for t, s in per_type_stats.items() if EXPECTED[t] == WHITE)
    found_white = sum(s[WHITE] for t, s in per_type_stats.items() if EXPECTED[t] == WHITE)
    return {
        "um_per_px": um,
        "fields": fields,
        "field_um": FIELD_UM,
        "background_squares": len(squares),
        "white_recall": round(found_white / n_white, 3),
        "white_precision": round(white_tp / white_det, 3) if white_det else None,
        "white_centre_error_um_p50_p90": np.percentile(errors, [50, 90]).round(2).tolist()
        if errors
        else None,
        "white_detections": white_det,
        "white_detections_on_platelets": white_on_platelet,
        "white_precision_without_platelets": (
            round(white_tp / (white_det - white_on_platelet), 3) if white_det > white_on_platelet else None
        ),
        "platelet_precision": round(plt_tp / plt_det, 3) if plt_det else None,
        "platelet_detections": plt_det,
        "per_type": per_type_stats,
        "by_layout": {
            k: {**v, "recall": round(v["found"] / v["n"], 3) if v["n"] else None} for k, v in layouts.items()
        },
        "white_pairs_both_found": {
            k: {**v, "rate": round(v["both_found"] / v["pairs"], 3) if v["pairs"] else None}
            for k, v in pairs_ww.items()
        },
    }


def shift_eval(pbc: Path, src_um: float, um: float, per_type: int, fields: int, seed: int) -> dict:
    """(e): white recall / precision of the composite fields under each acquisition shift."""
    import robustness as rb

    rng = np.random.default_rng(seed)
    sprites, squares = composite_material(pbc, src_um, um, per_type)
    made = [compose_field(rng, sprites, squares, um, FIELD_UM) for _ in range(fields)]
    shifts = [("none", "as made", None)] + [
        (f"{name}:{sev}", what, fn) for name in SHIFTED for sev, (what, fn) in rb.SHIFTS[name].items()
    ]
    out = {}
    for key, what, fn in shifts:
        pasted = found = detected = right = 0
        for i, (img, truths) in enumerate(made):
            cells = detect_cells(img if fn is None else fn(img, i), um)
            m = match(truths, cells, MATCH_UM / um)
            whites = [k for k, t in enumerate(truths) if EXPECTED[t.kind] == WHITE]
            pasted += len(whites)
            found += sum(k in m and cells[m[k]].kind == WHITE for k in whites)
            kind_of = {j: truths[k].kind for k, j in m.items()}
            for j, c in enumerate(cells):
                if c.kind == WHITE:
                    detected += 1
                    right += int(j in kind_of and EXPECTED[kind_of[j]] == WHITE)
        out[key] = {
            "what": what,
            "pasted_white": pasted,
            "white_recall": round(found / pasted, 3) if pasted else None,
            "white_precision": round(right / detected, 3) if detected else None,
        }
    return out


# --- PBC images -----------------------------------------------------------------------------------


def pbc_eval(pbc: Path, src_um: float, per_type: int) -> dict:
    out = {}
    for um in (src_um, 0.48):
        rows = {}
        for t in PBC_TYPES:
            found = 0
            extra = []
            for f in sorted((pbc / t).glob("*.jpg"))[:per_type]:
                rgb = _resize(read_image(f), src_um / um)
                h, w = rgb.shape[:2]
                cells = detect_cells(rgb, um)
                truth = [Truth((w - 1) / 2, (h - 1) / 2, t, "single", -1)]
                m = match(truth, cells, MATCH_UM / um)
                hit = 0 in m and cells[m[0]].kind == EXPECTED[t]
                found += int(hit)
                extra.append(sum(c.kind == WHITE for j, c in enumerate(cells) if not (0 in m and j == m[0])))
            rows[t] = {
                "n": per_type,
                "centre_found": round(found / per_type, 3),
                "extra_white_mean": round(float(np.mean(extra)), 3),
                "images_with_extra_white": round(float(np.mean(np.array(extra) > 0)), 3),
            }
        out[f"{um:.3f}"] = rows
    return out


# --- B-ALL images ---------------------------------------------------------------------------------

COLOURS = {WHITE: (0, 200, 0), PLATELET: (255, 150, 0), OTHER: (230, 0, 0)}


def overlay(rgb: np.ndarray, cells: list[Cell]) -> np.ndarray:
    out = rgb.copy()
    for c in cells:
        x0, y0, x1, y1 = c.box
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), COLOURS[c.kind], 1)
        cv2.circle(out, (round(c.x), round(c.y)), 2, COLOURS[c.kind], -1)
    return out


def b_all_eval(data: Path, sheet_path: Path, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    tiles = []
    for cls in sorted(p.name for p in data.iterdir() if p.is_dir()):
        files = sorted((data / cls).glob("*.jpg"))
        counts = {WHITE: [], PLATELET: [], OTHER: []}
        pick = set(rng.choice(len(files), 6, replace=False).tolist())
        for i, f in enumerate(files):
            rgb = read_image(f)
            cells = detect_cells(rgb, B_ALL_UM)
            for k in counts:
                counts[k].append(sum(c.kind == k for c in cells))
            if i in pick:
                tile = cv2.resize(overlay(rgb, cells), (224, 224), interpolation=cv2.INTER_AREA)
                cv2.putText(
                    tile, f"{cls} {f.stem[-4:]}", (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1
                )
                tiles.append(tile)
        white = np.array(counts[WHITE])
        out[cls] = {
            "images": len(files),
            "white_per_image_percentiles_0_10_50_90_100": np.percentile(white, [0, 10, 50, 90, 100]).tolist(),
            "white_mean": round(float(white.mean()), 2),
            "images_without_white": int((white == 0).sum()),
            "platelets_mean": round(float(np.mean(counts[PLATELET])), 2),
            "other_mean": round(float(np.mean(counts[OTHER])), 2),
        }
    rows = [np.hstack(tiles[i : i + 6]) for i in range(0, len(tiles), 6)]
    sheet = np.vstack(rows)
    cv2.imwrite(str(sheet_path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return out


# --- speed ----------------------------------------------------------------------------------------


def speed(pbc: Path, src_um: float, seed: int) -> dict:
    um = 0.19
    rng = np.random.default_rng(seed)
    sprites = {
        t: [make_sprite(read_image(f), t, src_um, um) for f in sorted((pbc / t).glob("*.jpg"))[:8]]
        for t in PBC_TYPES
    }
    squares = background_squares(pbc, src_um, um, 10)
    size_um = (1920 * um, 1080 * um)
    out: dict = {"frame": [1920, 1080], "um_per_px": um}
    for n in (5, 20, 50):
        img, truths = compose_field(rng, sprites, squares, um, size_um, n_slots=n)
        assert img.shape[:2] == (1080, 1920), img.shape
        detect_cells(img, um)
        times = []
        for _ in range(7):
            t = time.perf_counter()
            cells = detect_cells(img, um)
            times.append((time.perf_counter() - t) * 1000)
        out[f"{n}_cells"] = {
            "ms_min": round(min(times), 1),
            "ms_median": round(statistics.median(times), 1),
            "found_white": sum(c.kind == WHITE for c in cells),
        }
    try:
        from device.models.runtime import make_interpreter

        interp, runtime = make_interpreter(str(ROOT / "models" / "mobilenetv2-all4-int8" / "model.tflite"), 1)
        d = interp.get_input_details()[0]
        interp.set_tensor(
            d["index"], np.random.default_rng(0).integers(0, 255, tuple(d["shape"])).astype(d["dtype"])
        )
        for _ in range(5):
            interp.invoke()
        times = []
        for _ in range(20):
            t = time.perf_counter()
            interp.invoke()
            times.append((time.perf_counter() - t) * 1000)
        out["mobilenetv2_int8_invoke_ms_1thread"] = round(statistics.median(times), 1)
        out["runtime"] = runtime
    except Exception as exc:  # the runtime may be missing where this runs: the detection times still stand
        out["mobilenetv2_int8_invoke_ms_1thread"] = None
        out["runtime_error"] = str(exc)
    return out


# --- report ---------------------------------------------------------------------------------------


def _row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def markdown(res: dict) -> str:
    """The result file: the header, then one section per measurement (a) to (d)."""
    sections = (_md_header, _md_composite, _md_pbc, _md_ball, _md_speed, _md_shifts)
    return "\n".join(line for section in sections for line in section(res))


def _md_header(res: dict) -> list[str]:
    q = res["pbc_scale"]["percentiles_10_25_50_75_90"]
    return [
        "# Cell detection (benchmarks/cell_detection.py)",
        "",
        f"Command: `{res['command']}`. Machine: {res['machine']}. Run time {res['seconds']} s.",
        f"Match: detection centre within {MATCH_UM} µm of the pasted/known centre, one to one.",
        "",
        "PBC scale measured with device/optics/scale.py (red cells taken as 7.5 µm):"
        f" median {q[2]:.3f} µm/px (10-90%: {q[0]:.3f}-{q[4]:.3f};"
        f" {res['pbc_scale']['n_confident']} of {res['pbc_scale']['n_images']} images confident).",
        "",
    ]


def _md_composite(res: dict) -> list[str]:
    lines = ["## (a) Composite fields (PBC cells pasted at known places on PBC background squares)", ""]
    for key, c in res["composite"].items():
        lines += [
            f"### {key} µm/px: {c['fields']} fields of {c['field_um'][0]:g} x {c['field_um'][1]:g} µm",
            "",
            f"White cells: recall {c['white_recall']}, precision {c['white_precision']}"
            f" ({c['white_detections']} white detections; {c['white_detections_on_platelets']} of them on a"
            f" pasted platelet; precision without those {c['white_precision_without_platelets']})."
            f" Centre error of the white cells found (µm, median / 90th percentile):"
            f" {c['white_centre_error_um_p50_p90']}."
            f" Platelets: precision {c['platelet_precision']}"
            f" ({c['platelet_detections']} detections).",
            "",
            _row(
                "type", "pasted", "expected kind", "recall", "as white", "as platelet", "as other", "missed"
            ),
            _row(*["---"] * 8),
        ]
        for t, s in c["per_type"].items():
            lines.append(
                _row(t, s["n"], EXPECTED[t], s["recall"], s[WHITE], s[PLATELET], s[OTHER], s["missed"])
            )
        lines += ["", _row("layout", "cells", "recall"), _row(*["---"] * 3)]
        lines += [_row(k, v["n"], v["recall"]) for k, v in c["by_layout"].items()]
        lines += ["", _row("white-white pairs", "pairs", "both found"), _row(*["---"] * 3)]
        lines += [_row(k, v["pairs"], v["rate"]) for k, v in c["white_pairs_both_found"].items()]
        lines.append("")
    return lines


def _md_pbc(res: dict) -> list[str]:
    lines = ["## (b) PBC images: the centre cell found (expected kind), extra white detections", ""]
    for um, rows in res["pbc"].items():
        lines += [
            f"### at {um} µm/px",
            "",
            _row("type", "images", "centre found", "extra white / image", "images with an extra white"),
            _row(*["---"] * 5),
        ]
        for t, r in rows.items():
            lines.append(
                _row(t, r["n"], r["centre_found"], r["extra_white_mean"], r["images_with_extra_white"])
            )
        lines.append("")
    return lines


def _md_ball(res: dict) -> list[str]:
    columns = ("class", "images", "white/image p0 p10 p50 p90 p100", "mean", "images with none", "platelets")
    lines = ["## (c) B-ALL images (all-4class, 0.479 µm/px)", "", _row(*columns, "other"), _row(*["---"] * 7)]
    for cls, r in res["b_all"].items():
        p = " ".join(f"{v:g}" for v in r["white_per_image_percentiles_0_10_50_90_100"])
        lines.append(
            _row(
                cls,
                r["images"],
                p,
                r["white_mean"],
                r["images_without_white"],
                r["platelets_mean"],
                r["other_mean"],
            )
        )
    sheet = "`cell_detection_sheet.png` (green white, orange platelet, red other)"
    note = f"Contact sheet: {sheet}; written locally, not committed: it shows dataset images."
    return [*lines, "", note, ""]


def _md_speed(res: dict) -> list[str]:
    s = res["speed"]
    lines = [
        f"## (d) Speed: 1920 x 1080 frame at {s['um_per_px']} µm/px",
        "",
        _row("cells pasted", "detect_cells ms (median of 7)", "min of 7", "white found"),
        _row(*["---"] * 4),
    ]
    for n in (5, 20, 50):
        r = s[f"{n}_cells"]
        lines.append(_row(n, r["ms_median"], r["ms_min"], r["found_white"]))
    return [
        *lines,
        "",
        f"One MobileNetV2 int8 invoke (1 thread), same run: {s['mobilenetv2_int8_invoke_ms_1thread']} ms.",
        "",
    ]


def _md_shifts(res: dict) -> list[str]:
    rows = res.get("shifts")
    if not rows:
        return []
    lines = [
        "## (e) Composite fields of (a) at 0.48 µm/px through the acquisition shifts"
        f" ({res['shift_fields']} fields)",
        "",
        _row("shift", "what", "white recall", "white precision"),
        _row(*["---"] * 4),
    ]
    lines += [_row(k, r["what"], r["white_recall"], r["white_precision"]) for k, r in rows.items()]
    return [*lines, ""]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", help="the shared folder holding datasets/ (default ../shared)")
    ap.add_argument("--per-type", type=int, default=60, help="PBC images per type (sprites and part b)")
    ap.add_argument("--fields", type=int, default=40, help="composite fields per scale")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    shared = _shared(args.shared)
    pbc, ball = shared / "datasets" / "pbc-normal", shared / "datasets" / "all-4class"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    res: dict = {
        "command": "python benchmarks/cell_detection.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{platform.machine()}, {platform.python_version()}",
        "match_um": MATCH_UM,
    }
    res["pbc_scale"] = pbc_scale(pbc)
    src_um = round(res["pbc_scale"]["percentiles_10_25_50_75_90"][2], 4)
    print(f"PBC scale {src_um} µm/px", flush=True)
    res["composite"] = {
        f"{um:g}": composite_eval(pbc, src_um, um, args.per_type, args.fields, args.seed)
        for um in (0.48, 0.2)
    }
    print("composite done", flush=True)
    res["pbc"] = pbc_eval(pbc, src_um, args.per_type)
    print("pbc done", flush=True)
    res["b_all"] = b_all_eval(ball, out / "cell_detection_sheet.png", args.seed)
    print("b-all done", flush=True)
    res["speed"] = speed(pbc, src_um, args.seed)
    res["shifts"] = shift_eval(pbc, src_um, 0.48, args.per_type, args.fields, args.seed)
    res["shift_fields"] = args.fields
    res["seconds"] = round(time.time() - t0, 1)
    (out / "cell_detection.json").write_text(json.dumps(res, indent=1) + "\n")
    (out / "cell_detection.md").write_text(markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
