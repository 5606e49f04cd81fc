"""The slide report as a one-page PDF, made on the station with fpdf2 (pure Python, no system
libraries; the text font is Debian's DejaVu Sans, package fonts-dejavu-core, embedded so names in any
script print as typed).

Images are shrunk with OpenCV to REPORT_IMAGE_PX before embedding as JPEG: a 20-field slide's report
stays small and the memory bounded whatever the camera's resolution."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
from fpdf import FPDF

from device.report.pdf_cells import render_cells
from device.report.slide import SlideReport

log = logging.getLogger(__name__)

FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/dejavu"))
FONT_REGULAR = "DejaVuSans.ttf"
FONT_BOLD = "DejaVuSans-Bold.ttf"
PAPERS = {"a4": "A4", "letter": "Letter"}
MARGIN_MM = 12.0
REPORT_IMAGE_PX = 480
JPEG_QUALITY = 80
#: Lines kept on the page; the rest are counted ("... and 4 more"): the report stays one page.
MAX_REVIEWS = 6
MAX_NOTES_CHARS = 160
LINE_MM = 3.6  # one 8 pt line

# What the core (Latin-1) font cannot draw, for the fallback when DejaVu is not installed.
_LATIN1 = str.maketrans({"≥": ">=", "→": "->", "—": "-", "–": "-", "…": "...", "“": '"', "”": '"'})


def find_font(dirs: tuple[Path, ...] = FONT_DIRS) -> tuple[Path, Path] | None:
    for d in dirs:
        regular, bold = d / FONT_REGULAR, d / FONT_BOLD
        if regular.is_file() and bold.is_file():
            return regular, bold
    return None


def shrink_jpeg(path: Path, max_px: int = REPORT_IMAGE_PX, quality: int = JPEG_QUALITY) -> bytes | None:
    """The stored JPEG at most max_px on its longer side (None when it cannot be read)."""
    bgr = cv2.imread(str(path), cv2.IMREAD_REDUCED_COLOR_2)
    if bgr is None:
        return None
    h, w = bgr.shape[:2]
    scale = max_px / max(h, w)
    if scale < 1:
        bgr = cv2.resize(
            bgr, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
        )
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return np.asarray(buf).tobytes() if ok else None


class _Doc(FPDF):
    def __init__(self, paper: str, font: tuple[Path, Path] | None):
        super().__init__(orientation="portrait", unit="mm", format=paper)
        self.set_margins(MARGIN_MM, MARGIN_MM, MARGIN_MM)
        self.set_auto_page_break(True, MARGIN_MM)
        self.unicode = font is not None
        if font is not None:
            self.add_font("DejaVu", "", str(font[0]))
            self.add_font("DejaVu", "B", str(font[1]))
            self.family = "DejaVu"
        else:
            log.warning("fonts-dejavu-core not installed: the PDF report uses a Latin-1 font")
            self.family = "Helvetica"

    def t(self, text: str) -> str:
        if self.unicode:
            return text
        return text.translate(_LATIN1).encode("latin-1", "replace").decode("latin-1")

    def font(self, size: float, bold: bool = False) -> None:
        self.set_font(self.family, "B" if bold else "", size)

    def line_text(self, text: str, size: float = 9, bold: bool = False, h: float | None = None) -> None:
        self.font(size, bold)
        self.multi_cell(0, h or size * 0.45, self.t(text), new_x="LMARGIN", new_y="NEXT")

    def one_line(self, text: str, size: float = 8) -> None:
        """One line, cut with "…" to the page width (reviews: the page stays one page)."""
        self.font(size)
        text = self.t(text)
        if self.get_string_width(text) > self.epw:
            ell = self.t("…")
            while text and self.get_string_width(text + ell) > self.epw:
                text = text[: max(0, int(len(text) * 0.95) - 1)]
            text += ell
        self.cell(0, size * 0.45, text, new_x="LMARGIN", new_y="NEXT")

    def kv(self, rows: list[tuple[str, str]], key_w: float = 28) -> None:
        for key, value in rows:
            self.font(8.5, True)
            self.cell(key_w, 4.4, self.t(key))
            self.font(8.5)
            self.multi_cell(0, 4.4, self.t(value or "—"), new_x="LMARGIN", new_y="NEXT")

    def heading(self, text: str) -> None:
        self.ln(1.5)
        self.line_text(text, 10.5, bold=True, h=5.5)


def render_pdf(report: SlideReport, paper: str = "a4", font_dirs: tuple[Path, ...] = FONT_DIRS) -> bytes:
    """One page (A4 or Letter: `paper` "a4" | "letter") for the clinician."""
    doc = _Doc(PAPERS.get(paper.lower(), "A4"), find_font(font_dirs))
    doc.set_title(doc.t(f"Slide report {report.slide_id}"))
    doc.set_creator("smearscope")
    doc.add_page()

    doc.line_text("smearscope · slide screening report", 14, bold=True, h=7)
    doc.set_fill_color(255, 244, 214)
    doc.font(9.5, True)
    doc.multi_cell(0, 6, doc.t(report.disclaimer), fill=True, align="C", new_x="LMARGIN", new_y="NEXT")
    doc.ln(1.5)

    doc.kv(
        [
            ("Slide", report.slide_id),
            ("Sample", f"{report.sample_id} ({report.status})"),
            ("Station", report.station),
            ("Profile", report.profile),
            ("Started", f"{report.started} by {report.created_by}"),
            ("Finished", report.finished or "not finished: figures may still change"),
            ("Printed", f"{report.generated} (time zone {report.zone})"),
            ("Notes", report.notes[:MAX_NOTES_CHARS] or "—"),
        ]
    )

    doc.heading("Slide call")
    suspicious = report.call == "suspicious"
    doc.set_draw_color(*((179, 38, 30) if suspicious else (106, 42, 125)))
    doc.set_line_width(0.6)
    doc.font(12, True)
    doc.set_text_color(*((179, 38, 30) if suspicious else (29, 27, 32)))
    doc.multi_cell(0, 7, doc.t(report.call_text), border=1, padding=1.5, new_x="LMARGIN", new_y="NEXT")
    doc.set_text_color(29, 27, 32)
    doc.set_line_width(0.2)
    doc.set_draw_color(217, 212, 222)
    doc.ln(1)
    doc.line_text(
        f"{report.fields} fields · {report.confident_fields} confident · {report.uncertain_fields} "
        f"uncertain · {report.reviewed_fields} reviewed · {report.malignant_fields} malignant",
        9,
        bold=True,
    )
    if report.labels:
        doc.font(8.5)
        with doc.table(
            col_widths=(70, 25, 25, 30), width=150, align="L", line_height=4.6, first_row_as_headings=True
        ) as table:
            table.row([doc.t(x) for x in ("Label", "Fields", "Fraction", "Malignant")])
            for lb in report.labels:
                table.row(
                    [
                        doc.t(lb.display),
                        str(lb.count),
                        f"{100 * lb.fraction:.1f}%",
                        "yes" if lb.malignant else "no",
                    ]
                )
    render_cells(doc, report)
    doc.line_text(f"Rule: {report.rule}", 7.5)

    # What follows the images is reserved first, so the images give way when the page is full.
    review_lines = min(len(report.reviews), MAX_REVIEWS) + (len(report.reviews) > MAX_REVIEWS) or 1
    tail_mm = 2 * 7.0 + (review_lines + 2 * max(1, len(report.models)) + 2 * 2) * LINE_MM
    if report.images:
        doc.heading("Representative fields")
        _images(doc, report, reserve_mm=tail_mm)

    doc.heading("Reviews")
    if report.reviews:
        for rv in report.reviews[:MAX_REVIEWS]:
            comment = f" — {rv.comment}" if rv.comment else ""
            doc.one_line(
                f"{rv.when} · {rv.reviewer}: field {rv.field} (model {rv.model_label}) {rv.verdict}{comment}"
            )
        if len(report.reviews) > MAX_REVIEWS:
            doc.one_line(f"… and {len(report.reviews) - MAX_REVIEWS} more on the station's sample page")
    else:
        doc.one_line("No field reviewed yet.")

    doc.heading("Models")
    for m in report.models:
        signed = f", signed {m.signed_at[:10]}" if m.signed_at else ""
        doc.line_text(f"{m.name} · sha256 {m.sha256[:16]} · signing key {m.key_id}{signed}", 8)
    if not report.models:
        doc.line_text("No field classified yet.", 8)

    doc.ln(1)
    doc.line_text(
        f"{report.disclaimer} Every slide is reviewed by a hematologist; uncertain fields are referred.",
        8,
        bold=True,
    )
    return bytes(doc.output())


def _images(doc: _Doc, report: SlideReport, reserve_mm: float, per_row: int = 3, gap: float = 3.0) -> None:
    cell_w = (doc.epw - gap * (per_row - 1)) / per_row
    img_h = cell_w * 0.5
    for start in range(0, len(report.images), per_row):
        row = report.images[start : start + per_row]
        y = doc.get_y()
        if y + img_h + 5 + LINE_MM > doc.h - doc.b_margin - reserve_mm:
            doc.one_line(f"{len(report.images) - start} more field(s) on the station's sample page")
            return
        for i, im in enumerate(row):
            x = doc.l_margin + i * (cell_w + gap)
            data = shrink_jpeg(im.path) if im.path is not None else None
            if data is not None:
                doc.image(data, x=x, y=y, w=cell_w, h=img_h, keep_aspect_ratio=True)
            else:
                doc.set_xy(x, y)
                doc.font(7.5)
                doc.multi_cell(cell_w, img_h, doc.t("image not on this station"), border=1, align="C")
            doc.set_xy(x, y + img_h + 0.5)
            doc.font(7.5)
            doc.cell(cell_w, 3.5, doc.t(im.caption[:60]))
        doc.set_xy(doc.l_margin, y + img_h + 4.5)
