"""Find each nucleated white cell in a field: centre, box, nucleus and cell areas, and what it is.

Steps, on a copy of the image at about `DetectParams.work_um_per_px` (masks need no finer detail):

1. White reference (`device.colour.normalise_background`), so a camera's white balance does not
   matter, then optical density (OD) per channel relative to the plasma background.
2. Nuclear pixels: the `device.optics.nuclei` colour test (strong green absorption, clearly more than
   blue and red: purple-blue chromatin; red cells absorb the three alike). A small closing joins a
   lobed nucleus's pieces; small holes (pale chromatin) are filled.
3. Touching nuclei are split by the distance transform: its local maxima at least `split_peak_um` deep
   are seeds, each pixel goes to the seed minimising (distance - seed depth), and two neighbouring
   regions stay one when the depth at the line between them (the neck) is above `split_saddle` x the
   smaller seed's depth (no real waist between them).
4. In a strongly stained smear granular cytoplasm passes the colour test too, so overlapping
   neutrophils make one region without a waist: a region holding the dark chromatin cores of several
   cells is divided between them (`_split_by_cores`).
   Pieces that lie within one nucleus's span are then grouped again: lobes of a segmented neutrophil or
   an eosinophil are one cell, not 2-4. Two pieces that are each a whole nucleus's size stay apart.
5. Each group is named: a white cell (nucleus 12-450 µm², purple: median OD green - blue at least
   `min_purple`, or very dark), a platelet (2-12 µm²: 2-4 µm across), or other (larger: smudges, clumps,
   stain deposits). Bodies not purple enough (pink red cells' rims, specks) are dropped.
6. The cell's body: the stained pixels connected to the nucleus, at most `cytoplasm_um` beyond it and
   nearer to it than to another nucleus; its bounding box is the cell's box (a red cell touching the
   cell can add up to `cytoplasm_um` to it: the box is generous, the centre is the nucleus's).

Red cells (no nucleus) are never seeds, so they are not reported. Erythroblasts (nucleated red cells) pass
as white cells here: naming them is the cell classifier's job when its vocabulary has them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from device.colour import normalise_background
from device.optics.nuclei import NucleusThresholds, background_colour, nuclear_pixels

WHITE = "white"
PLATELET = "platelet"
OTHER = "other"
KINDS = (WHITE, PLATELET, OTHER)
#: Working pixels across the cross that opens the nuclear mask: single-pixel specks go, nuclei stay.
SPECK_PX = 3


@dataclass(frozen=True)
class Cell:
    x: float  # centre (of the nucleus) in frame pixels
    y: float
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in frame pixels (x1, y1 exclusive), clipped to the frame
    nucleus_area_um2: float
    cell_area_um2: float
    kind: str  # "white" (nucleated, counted) | "platelet" | "other" (debris/smudge, not counted)
    score: float  # 0..1 confidence that it is what `kind` says
    touches_edge: bool  # cut by the frame border


@dataclass(frozen=True)
class DetectParams:
    #: The masks are computed at about this scale (a nucleus lobe is >= ~2 µm: 4 px).
    work_um_per_px: float = 0.5
    nucleus: NucleusThresholds = field(default_factory=NucleusThresholds)
    #: A second pixel test for blue-violet chromatin (green OD >= a, green - blue >= b, green - red >= c):
    #: in blue-toned stains a nucleus absorbs red as much as green and fails the purple test's green-red
    #: margin; blue-grey red cells absorb red clearly more than green (green - red ~ -0.1 to -0.2).
    blue_nucleus: tuple[float, float, float] | None = (0.3, 0.3, -0.06)
    #: Closing radius that joins a lobed nucleus's pieces separated by thin, faint strands.
    close_um: float = 0.8
    #: Holes in the nuclear mask up to this area are pale chromatin and filled; larger ones are not nucleus.
    max_hole_um2: float = 8.0
    #: Smallest nucleus of a white cell (a small lymphocyte's is ~40 µm²; a neutrophil's lobes ~10 each).
    min_nucleus_um2: float = 12.0
    #: Larger purple bodies are smudges, clumps or stain deposits, not one cell's nucleus.
    max_nucleus_um2: float = 450.0
    #: A platelet: a small purple body of this area range (2-4 µm across).
    platelet_um2: tuple[float, float] = (2.0, 12.0)
    #: Split touching nuclei only between seeds at least this deep (a nucleus >= 2x this wide).
    split_peak_um: float = 2.0
    #: Keep two regions one when their neck's depth is above this fraction of the smaller peak.
    split_saddle: float = 0.8
    #: Pieces whose centres are this close and whose union fits in `lobe_span_um` are one nucleus.
    lobe_reach_um: float = 10.0
    lobe_span_um: float = 15.0
    #: Two pieces both at least this large are two nuclei, whatever their distance.
    whole_nucleus_um2: float = 28.0
    #: Chromatin cores: green OD >= max(core_min_od, core_fraction x the 95th percentile of nuclear
    #: pixels), in pieces of at least core_min_um2 (a neutrophil lobe's dark part).
    core_fraction: float = 0.6
    core_min_od: float = 0.4
    core_min_um2: float = 3.0
    #: ... and only in a region wider than one cell (two overlapping cells span more): a large single
    #: cell with patchy chromatin stays whole.
    divide_span_um: float = 17.0
    #: A cell's body reaches at most this far beyond its nucleus.
    cytoplasm_um: float = 3.5
    #: Mean OD (over R, G, B) above which a pixel is stained (a cell, not plasma).
    stain_od: float = 0.06
    #: A nucleus's median (OD green - OD blue) is at least this: chromatin is purple. Pink red cells'
    #: rims pass the pixel test here and there (their median is ~0.1-0.2); pale Pro-B blasts are ~0.3.
    min_purple: float = 0.22
    #: ... or its median green OD at least this (very dark bodies: a basophil's granules absorb blue too).
    min_dark: float = 0.8


@dataclass
class _Piece:
    ys: np.ndarray
    xs: np.ndarray

    @property
    def area(self) -> int:
        return len(self.xs)

    @property
    def centre(self) -> tuple[float, float]:
        return float(self.xs.mean()), float(self.ys.mean())


def _check_input(rgb: np.ndarray, um_per_px: float) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError("detect_cells needs an RGB uint8 image of shape (H, W, 3)")
    if rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise ValueError("detect_cells needs a non-empty image")
    if not (um_per_px > 0 and np.isfinite(um_per_px)):
        raise ValueError(f"um_per_px must be a positive number, not {um_per_px!r}")


def _working_copy(rgb: np.ndarray, um_per_px: float, work_um: float) -> tuple[np.ndarray, float]:
    """The image at about `work_um` µm/px (never enlarged) and its size factor (work px per frame px)."""
    h, w = rgb.shape[:2]
    f = min(1.0, um_per_px / work_um)
    if f >= 1.0:
        return rgb, 1.0
    size = (max(1, round(w * f)), max(1, round(h * f)))
    k = int(1.0 / f)
    if k >= 2 and w // k >= size[0] and h // k >= size[1]:
        # INTER_AREA by a whole factor is a fast box filter; at a fractional factor it is ~5x slower, so
        # the rest of the way (less than 2x) is linear
        rgb = cv2.resize(rgb, (w // k, h // k), interpolation=cv2.INTER_AREA)
    small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if rgb.shape[1] == w else cv2.INTER_LINEAR)
    return small, size[0] / w


def _optical_density(rgb: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """float32 (H, W, 3) OD per channel relative to the background colour `bg`."""
    levels = np.log(np.maximum(np.arange(256, dtype=np.float32), 1.0))
    out = np.empty(rgb.shape, np.float32)
    for c in range(3):
        lut = np.log(max(float(bg[c]), 1.0)) - levels
        out[..., c] = lut.take(rgb[..., c])
    return out


def _fill_holes(mask: np.ndarray, max_hole_px: float) -> np.ndarray:
    """`mask` (0/1) with its holes up to `max_hole_px` filled (pale chromatin inside a nucleus); larger
    holes stay open (cytoplasm enclosed by two touching cells' nuclei is not nucleus)."""
    contours, hierarchy = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    out = mask.copy()
    if hierarchy is None:
        return out
    for c, (_, _, _, parent) in zip(contours, hierarchy[0], strict=True):
        if parent >= 0 and cv2.contourArea(c) <= max_hole_px:
            cv2.drawContours(out, [c], -1, 1, thickness=cv2.FILLED)
    return out


def _disc(radius_px: float) -> np.ndarray:
    d = max(1, 2 * round(radius_px) + 1)
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (d, d))


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        self.parent[self.find(a)] = self.find(b)


def _split_touching(mask: np.ndarray, peak_px: float, saddle_ratio: float) -> np.ndarray:
    """int32 labels (0 = background, 1..n) of `mask` with touching round nuclei split apart.

    Each pixel of a component with several seeds goes to the seed minimising (distance to the seed -
    the seed's depth): for two overlapping discs that is the chord through their intersection (a
    power diagram), and it needs no flooding order."""
    dt = cv2.distanceTransform(mask, cv2.DIST_L2, 5)
    n_comp, comp = cv2.connectedComponents(mask, connectivity=8)
    comp = comp.astype(np.int32)
    if n_comp <= 1:
        return comp
    peaks = ((dt >= cv2.dilate(dt, _disc(peak_px)) - 1e-3) & (dt >= peak_px)).view(np.uint8)
    n_peaks, _, _, seed_xy = cv2.connectedComponentsWithStats(peaks, connectivity=8)
    if n_peaks <= 2:
        return comp
    seed_xy = seed_xy[1:]
    sx = np.clip(np.round(seed_xy[:, 0]).astype(int), 0, mask.shape[1] - 1)
    sy = np.clip(np.round(seed_xy[:, 1]).astype(int), 0, mask.shape[0] - 1)
    seed_comp = comp[sy, sx]
    seed_depth = dt[sy, sx]
    out = comp.copy()
    next_label = n_comp
    for c in np.unique(seed_comp):
        idx = np.flatnonzero(seed_comp == c)
        if c == 0 or len(idx) < 2:
            continue
        ys, xs = np.nonzero(comp == c)
        cost = np.hypot(xs[:, None] - seed_xy[idx, 0], ys[:, None] - seed_xy[idx, 1]) - seed_depth[idx]
        part = np.argmin(cost, axis=1)
        labels = np.arange(next_label, next_label + len(idx), dtype=np.int32)
        labels[0] = c  # the first part keeps the component's label
        out[ys, xs] = labels[part]
        depth = {int(lab): float(seed_depth[k]) for lab, k in zip(labels, idx, strict=True)}
        next_label += len(idx)
        # parts meeting without a real neck are one nucleus again
        pos = {int(lab): k for k, lab in enumerate(labels)}
        uf = _UnionFind(len(idx))
        for a, b, saddle in _necks(out, dt, set(depth)):
            if saddle > saddle_ratio * min(depth[a], depth[b]):
                uf.union(pos[a], pos[b])
        for k, lab in enumerate(labels):
            root = labels[uf.find(k)]
            if root != lab:
                out[out == lab] = root
    return out


def _necks(labels: np.ndarray, dt: np.ndarray, among: set[int]) -> list[tuple[int, int, float]]:
    """(label a, label b, neck depth) for each pair of touching regions among `among`: the largest
    distance-transform value on the line where they meet."""
    found: dict[tuple[int, int], float] = {}
    for a, b, da, db in (
        (labels[:, :-1], labels[:, 1:], dt[:, :-1], dt[:, 1:]),
        (labels[:-1, :], labels[1:, :], dt[:-1, :], dt[1:, :]),
    ):
        sel = (a != b) & (a > 0) & (b > 0)
        if not sel.any():
            continue
        depth = np.minimum(da[sel], db[sel]).tolist()
        for x, y, d in zip(a[sel].tolist(), b[sel].tolist(), depth, strict=True):
            if x in among and y in among:
                key = (min(x, y), max(x, y))
                found[key] = max(found.get(key, 0.0), d)
    return [(x, y, d) for (x, y), d in found.items()]


def _pieces(labels: np.ndarray) -> list[_Piece]:
    ys, xs = np.nonzero(labels)
    if len(xs) == 0:
        return []
    lab = labels[ys, xs]
    order = np.argsort(lab, kind="stable")
    lab, ys, xs = lab[order], ys[order], xs[order]
    cuts = np.flatnonzero(np.diff(lab)) + 1
    return [_Piece(y, x) for y, x in zip(np.split(ys, cuts), np.split(xs, cuts), strict=True)]


def _split_by_cores(pieces: list[_Piece], odg: np.ndarray, px_um: float, p: DetectParams) -> list[_Piece]:
    """Split pieces that hold the dark chromatin cores of several cells. In a strongly stained smear the
    granular cytoplasm of neutrophils and their kin passes the nuclear colour test too, so two
    overlapping cells make one piece with no waist; their chromatin (green OD above `core_fraction` x
    the image's 95th percentile of nuclear pixels) still shows each nucleus. Cores are grouped like
    lobes; a piece with two or more groups is divided between them (nearest core). A piece with one
    group, or none (pale blasts in a frame with darker cells), stays whole."""
    if not pieces:
        return pieces
    values = np.concatenate([odg[pc.ys, pc.xs] for pc in pieces])
    t_core = max(p.core_min_od, p.core_fraction * float(np.percentile(values, 95)))
    min_core = p.core_min_um2 / px_um**2
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    out: list[_Piece] = []
    for pc in pieces:
        dark = odg[pc.ys, pc.xs] >= t_core
        if dark.sum() < 2 * min_core or _span([pc]) < p.divide_span_um / px_um:
            out.append(pc)
            continue
        x0, y0 = int(pc.xs.min()), int(pc.ys.min())
        shape = (int(pc.ys.max()) - y0 + 1, int(pc.xs.max()) - x0 + 1)
        local = np.zeros(shape, np.uint8)
        local[pc.ys[dark] - y0, pc.xs[dark] - x0] = 1
        local = cv2.morphologyEx(local, cv2.MORPH_OPEN, cross)
        n, lab, stats, _ = cv2.connectedComponentsWithStats(local, connectivity=8)
        cores = []
        for k in range(1, n):
            if stats[k, cv2.CC_STAT_AREA] >= min_core:
                ys, xs = np.nonzero(lab == k)
                cores.append(_Piece(ys + y0, xs + x0))
        groups = _group_lobes(cores, px_um, p) if len(cores) >= 2 else []
        if len(groups) < 2:
            out.append(pc)
            continue
        seeds = np.zeros(shape, np.int32)
        for gi, g in enumerate(groups):
            for c in g:
                seeds[c.ys - y0, c.xs - x0] = gi + 1
        free = (seeds == 0).astype(np.uint8)
        _, nearest = cv2.distanceTransformWithLabels(free, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
        lut = np.zeros(int(nearest.max()) + 1, np.int32)
        lut[nearest[seeds > 0]] = seeds[seeds > 0]
        owner = lut[nearest][pc.ys - y0, pc.xs - x0]
        out.extend(_Piece(pc.ys[owner == gi], pc.xs[owner == gi]) for gi in range(1, len(groups) + 1))
    return out


def _span(pieces: list[_Piece]) -> float:
    """Diameter (px) of the smallest circle around the pieces' pixels."""
    pts = np.concatenate([np.stack([p.xs, p.ys], axis=1) for p in pieces]).astype(np.float32)
    _, r = cv2.minEnclosingCircle(pts)
    return 2.0 * r + 1.0


def _group_lobes(pieces: list[_Piece], px_um: float, p: DetectParams) -> list[list[_Piece]]:
    """Pieces that lie within one nucleus's span (lobes of one cell) grouped together."""
    n = len(pieces)
    uf = _UnionFind(n)
    members = {i: [i] for i in range(n)}
    centres = np.array([pc.centre for pc in pieces], np.float32).reshape(-1, 2)
    whole_px = p.whole_nucleus_um2 / px_um**2
    reach, span = p.lobe_reach_um / px_um, p.lobe_span_um / px_um
    pairs = []
    for i in range(n):
        d = np.hypot(*(centres[i + 1 :] - centres[i]).T)
        for k in np.flatnonzero(d <= reach):
            pairs.append((float(d[k]), i, i + 1 + int(k)))
    for _, i, j in sorted(pairs):
        a, b = uf.find(i), uf.find(j)
        if a == b:
            continue
        if pieces[i].area >= whole_px and pieces[j].area >= whole_px:
            continue
        union = [pieces[k] for k in members[a] + members[b]]
        if _span(union) > span:
            continue
        uf.union(a, b)
        members[b] = members[a] + members[b]
        del members[a]
    return [[pieces[k] for k in ks] for ks in members.values()]


@dataclass(frozen=True)
class _Scale:
    """The frame's size, the working copy's size, and how one maps to the other."""

    H: int  # frame height, px
    W: int  # frame width, px
    h: int  # working copy height, px
    w: int  # working copy width, px
    f: float  # working px per frame px
    px_um: float  # µm per working pixel
    px_area: float  # µm² per working pixel


@dataclass(frozen=True)
class _Found:
    """A nucleus group named as a body worth reporting."""

    pieces: list[_Piece]
    kind: str
    score: float


def detect_cells(rgb: np.ndarray, um_per_px: float, *, params: DetectParams | None = None) -> list[Cell]:
    """The nucleated cells, platelets and debris in `rgb` (RGB uint8) whose pixels are `um_per_px` wide.

    Only `kind == "white"` cells are counted; the others are reported so a page can show them. Sorted
    top to bottom, then left to right."""
    _check_input(rgb, um_per_px)
    p = params or DetectParams()
    H, W = rgb.shape[:2]
    small, f = _working_copy(rgb, um_per_px, p.work_um_per_px)
    small = normalise_background(small)
    h, w = small.shape[:2]
    px_um = um_per_px / f  # µm per working pixel
    sc = _Scale(H, W, h, w, f, px_um, px_um * px_um)

    bg = background_colour(small)
    od = _optical_density(small, bg)
    closed = _nucleus_mask(small, od, bg, sc, p)
    labels = _split_touching(closed, p.split_peak_um / px_um, p.split_saddle)
    pieces = _split_by_cores(_pieces(labels), od[..., 1], px_um, p)
    groups = _group_lobes(pieces, px_um, p)
    if not groups:
        return []
    found = _named_groups(groups, od, sc.px_area, p)
    if not found:
        return []
    owner, piece_of = _bodies(found, od, sc, p)
    reach = int(np.ceil(p.cytoplasm_um / px_um)) + 1
    cells = [_cell(i, fd, owner, piece_of, reach, sc) for i, fd in enumerate(found)]
    cells.sort(key=lambda c: (round(c.y), c.x))
    return cells


def _nucleus_mask(
    small: np.ndarray, od: np.ndarray, bg: np.ndarray, sc: _Scale, p: DetectParams
) -> np.ndarray:
    """Nuclear pixels (0/1), specks opened away, lobes closed together, small holes filled."""
    raw = nuclear_pixels(small, p.nucleus, bg)
    if p.blue_nucleus is not None:
        min_g, min_gb, min_gr = p.blue_nucleus
        odr, odg, odb = od[..., 0], od[..., 1], od[..., 2]
        blue = (odg >= min_g) & (odg - odb >= min_gb) & (odg - odr >= min_gr)
        raw[blue] = 255
    speck = cv2.getStructuringElement(cv2.MORPH_CROSS, (SPECK_PX, SPECK_PX))
    raw = cv2.morphologyEx(raw, cv2.MORPH_OPEN, speck) // 255
    closed = cv2.morphologyEx(raw, cv2.MORPH_CLOSE, _disc(p.close_um / sc.px_um))
    return _fill_holes(closed, p.max_hole_um2 / sc.px_area)


def _named_groups(
    groups: list[list[_Piece]], od: np.ndarray, px_area: float, p: DetectParams
) -> list[_Found]:
    """Each nucleus group named (white cell, platelet, other); specks and what is not a body dropped."""
    odg, odb = od[..., 1], od[..., 2]
    found: list[_Found] = []
    for g in groups:
        ys = np.concatenate([pc.ys for pc in g])
        xs = np.concatenate([pc.xs for pc in g])
        area_um2 = len(xs) * px_area
        if area_um2 < p.platelet_um2[0]:
            continue  # a speck
        purple = float(np.median(odg[ys, xs] - odb[ys, xs]))
        kind, score = _name(area_um2, purple, float(np.median(odg[ys, xs])), p)
        if kind is not None:
            found.append(_Found(g, kind, score))
    return found


def _bodies(
    found: list[_Found], od: np.ndarray, sc: _Scale, p: DetectParams
) -> tuple[np.ndarray, np.ndarray]:
    """Each cell's body: the stained pixels near its nucleus, connected to it, nearer to it than to another.
    Returns (owner: 1 + index of the nearest nucleus per working pixel, piece_of: the stained pieces'
    labels)."""
    owner = np.zeros((sc.h, sc.w), np.int32)
    for i, fd in enumerate(found):
        for pc in fd.pieces:
            owner[pc.ys, pc.xs] = i + 1
    nuclei = (owner > 0).view(np.uint8)
    label_type = cv2.DIST_LABEL_PIXEL
    dist, nearest = cv2.distanceTransformWithLabels(
        1 - nuclei, cv2.DIST_L2, cv2.DIST_MASK_5, labelType=label_type
    )
    lut = np.zeros(int(nearest.max()) + 1, np.int32)
    lut[nearest[nuclei > 0]] = owner[nuclei > 0]
    owner = lut[nearest]
    stained = (od.mean(axis=2) >= p.stain_od) | (nuclei > 0)
    body = ((dist <= p.cytoplasm_um / sc.px_um) & stained).view(np.uint8)
    _, piece_of = cv2.connectedComponents(body, connectivity=8)
    return owner, piece_of


def _cell(i: int, fd: _Found, owner: np.ndarray, piece_of: np.ndarray, reach: int, sc: _Scale) -> Cell:
    """Found body `i` as a Cell in frame pixels; `reach`: how far (working px) its body can reach."""
    f, w, h = sc.f, sc.w, sc.h
    ys = np.concatenate([pc.ys for pc in fd.pieces])
    xs = np.concatenate([pc.xs for pc in fd.pieces])
    # only the window the body can reach: a frame holds many cells
    wx0, wy0 = max(0, int(xs.min()) - reach), max(0, int(ys.min()) - reach)
    wx1, wy1 = min(w, int(xs.max()) + reach + 1), min(h, int(ys.max()) + reach + 1)
    win = piece_of[wy0:wy1, wx0:wx1]
    mine = (owner[wy0:wy1, wx0:wx1] == i + 1) & np.isin(win, np.unique(piece_of[ys, xs]))
    region = mine.view(np.uint8)
    bx, by, bw, bh = cv2.boundingRect(region)
    bx, by = bx + wx0, by + wy0
    box = (
        max(0, int(np.floor(bx / f))),
        max(0, int(np.floor(by / f))),
        min(sc.W, int(np.ceil((bx + bw) / f))),
        min(sc.H, int(np.ceil((by + bh) / f))),
    )
    edge = bx == 0 or by == 0 or bx + bw >= w or by + bh >= h
    return Cell(
        x=float((xs.mean() + 0.5) / f - 0.5),
        y=float((ys.mean() + 0.5) / f - 0.5),
        box=box,
        nucleus_area_um2=float(len(xs) * sc.px_area),
        cell_area_um2=float(cv2.countNonZero(region) * sc.px_area),
        kind=fd.kind,
        score=fd.score,
        touches_edge=bool(edge),
    )


def _name(area_um2: float, purple: float, dark: float, p: DetectParams) -> tuple[str | None, float]:
    """(kind, score) of a nucleus group from its area, median OD green - blue and median green OD; kind
    None = not a nucleated body at all (a red cell's rim, a speck), dropped. The score is a rough
    0.5-1 margin (size and colour beyond the thresholds), not a calibrated probability."""
    lo, hi = p.platelet_um2
    if dark >= p.min_dark:
        purple = max(purple, p.min_purple)
    if area_um2 < lo or purple < p.min_purple:
        return None, 0.0
    if area_um2 < p.min_nucleus_um2:
        return (PLATELET, 0.6) if area_um2 <= hi else (None, 0.0)
    if area_um2 > p.max_nucleus_um2:
        return OTHER, float(min(1.0, 0.5 + (area_um2 / p.max_nucleus_um2 - 1.0)))
    size = min(1.0, area_um2 / (2.0 * p.min_nucleus_um2))
    ink = min(1.0, purple / (2.0 * p.min_purple))
    return WHITE, float(round(0.5 + 0.5 * size * ink, 3))
