"""The slide report as a one-page PDF, made on the station with fpdf2 (pure Python, no system
libraries; the text font is Debian's DejaVu Sans, package fonts-dejavu-core, embedded so names in any
script print as typed).

Images are shrunk with OpenCV to REPORT_IMAGE_PX before embedding as JPEG: a 20-field slide's report
stays small and the memory bounded whatever the camera's resolution."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
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
#: Colours (RGB 0-255): text, the suspicious call, the call's box otherwise, table rules, the notice.
INK = (29, 27, 32)
ALERT = (179, 38, 30)
ACCENT = (106, 42, 125)
TABLE_RULE = (217, 212, 222)
NOTICE_FILL = (255, 244, 214)

# What the core (Latin-1) font cannot draw, for the fallback when DejaVu is not installed.
_LATIN1 = str.maketrans({"≥": ">=", "→": "->", "—": "-", "–": "-", "…": "...", "“": '"', "”": '"'})


def english(message: str, **values: object) -> str:
    """The report's words as written (the default when no reader's language is given)."""
    return message % values if values else message


@dataclass(frozen=True)
class Words:
    """The reader's language for one report: `gettext(msgid, **values)` translates, the rest are
    already in that language (the web layer fills them with Flask-Babel: dates in the station's zone
    with the zone shown, the call and rule of device/web/advice.py). Empty fields fall back to the
    report's own English text."""

    gettext: Callable[..., str] = english
    percent: Callable[[float], str] = lambda x: f"{100 * x:.1f}%"
    #: a review's UTC ISO time as the reader reads it; None: the report's own local text
    when: Callable[[str], str] | None = None
    started: str = ""
    finished: str = ""
    printed: str = ""
    call_text: str = ""
    rule: str = ""
    disclaimer: str = ""
    lang: str = "en"


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


def render_pdf(
    report: SlideReport,
    paper: str = "a4",
    font_dirs: tuple[Path, ...] = FONT_DIRS,
    words: Words | None = None,
) -> bytes:
    """One page (A4 or Letter: `paper` "a4" | "letter") for the clinician, in `words`' language."""
    w = words or Words()
    _ = w.gettext  # the msgids below are the report page's (device/web/templates/report.html)
    disclaimer = w.disclaimer or report.disclaimer
    doc = _Doc(PAPERS.get(paper.lower(), "A4"), find_font(font_dirs))
    doc.set_title(doc.t(_("Report %(slide)s", slide=report.slide_id)))
    doc.set_creator("smearscope")
    doc.set_lang(w.lang)
    doc.add_page()

    _header(doc, report, w, disclaimer)
    _slide_call(doc, report, w)
    _field_labels(doc, report, w)
    render_cells(doc, report, w)
    doc.line_text(_("Rule: %(rule)s", rule=w.rule or report.rule), 7.5)

    # What follows the images is reserved first, so the images give way when the page is full.
    review_lines = min(len(report.reviews), MAX_REVIEWS) + (len(report.reviews) > MAX_REVIEWS) or 1
    tail_mm = 2 * 7.0 + (review_lines + 2 * max(1, len(report.models)) + 2 * 2) * LINE_MM
    if report.images:
        doc.heading(_("Representative fields"))
        _images(doc, report, reserve_mm=tail_mm, words=w)

    _reviews(doc, report, w)
    _models(doc, report, w)

    doc.ln(1)
    doc.line_text(
        f"{disclaimer} {_('Every slide is reviewed by a hematologist; uncertain fields are referred.')}",
        8,
        bold=True,
    )
    return bytes(doc.output())


def _header(doc: _Doc, report: SlideReport, w: Words, disclaimer: str) -> None:
    """Title, the screening-aid notice, and who, where and when."""
    _ = w.gettext
    doc.line_text(_("smearscope · slide screening report"), 14, bold=True, h=7)
    doc.set_fill_color(*NOTICE_FILL)
    doc.font(9.5, True)
    doc.multi_cell(0, 6, doc.t(disclaimer), fill=True, align="C", new_x="LMARGIN", new_y="NEXT")
    doc.ln(1.5)

    status = {"open": _("open"), "finished": _("finished")}.get(report.status, report.status)
    finished = w.finished or report.finished
    doc.kv(
        [
            (_("Slide"), report.slide_id),
            (_("Sample"), f"{report.sample_id} ({status})"),
            (_("Station"), report.station),
            (_("Profile"), report.profile),
            (
                _("Started"),
                _("%(when)s by %(user)s", when=w.started or report.started, user=report.created_by),
            ),
            (_("Finished"), finished or _("not finished: figures may still change")),
            (
                _("Printed"),
                _("%(when)s (time zone %(zone)s)", when=w.printed or report.generated, zone=report.zone),
            ),
            (_("Notes"), report.notes[:MAX_NOTES_CHARS] or "—"),
        ]
    )


def _slide_call(doc: _Doc, report: SlideReport, w: Words) -> None:
    """The slide call in a box (red when suspicious) and the field tallies under it."""
    _ = w.gettext
    doc.heading(_("Slide call"))
    suspicious = report.call == "suspicious"
    doc.set_draw_color(*(ALERT if suspicious else ACCENT))
    doc.set_line_width(0.6)
    doc.font(12, True)
    doc.set_text_color(*(ALERT if suspicious else INK))
    call_text = w.call_text or report.call_text
    doc.multi_cell(0, 7, doc.t(call_text), border=1, padding=1.5, new_x="LMARGIN", new_y="NEXT")
    doc.set_text_color(*INK)
    doc.set_line_width(0.2)
    doc.set_draw_color(*TABLE_RULE)
    doc.ln(1)
    doc.line_text(
        _(
            "%(fields)s fields · %(confident)s confident · %(uncertain)s uncertain · %(reviewed)s reviewed"
            " · %(malignant)s malignant",
            fields=report.fields,
            confident=report.confident_fields,
            uncertain=report.uncertain_fields,
            reviewed=report.reviewed_fields,
            malignant=report.malignant_fields,
        ),
        9,
        bold=True,
    )


def _field_labels(doc: _Doc, report: SlideReport, w: Words) -> None:
    """The table of field labels (fields, fraction, malignant), when there are any."""
    _ = w.gettext
    if not report.labels:
        return
    doc.font(8.5)
    with doc.table(
        col_widths=(70, 25, 25, 30), width=150, align="L", line_height=4.6, first_row_as_headings=True
    ) as table:
        table.row([doc.t(x) for x in (_("Label"), _("Fields"), _("Fraction"), _("Malignant"))])
        for lb in report.labels:
            table.row(
                [
                    doc.t(lb.display),
                    str(lb.count),
                    doc.t(w.percent(lb.fraction)),
                    doc.t(_("yes") if lb.malignant else _("no")),
                ]
            )


def _reviews(doc: _Doc, report: SlideReport, w: Words) -> None:
    """One line per review, at most MAX_REVIEWS (the rest counted)."""
    _ = w.gettext
    doc.heading(_("Reviews"))
    if not report.reviews:
        doc.one_line(_("No field reviewed yet."))
        return
    for rv in report.reviews[:MAX_REVIEWS]:
        comment = f" — {rv.comment}" if rv.comment else ""
        verdict = _("agreed") if rv.verdict == "agreed" else rv.verdict
        said = _(
            "%(when)s · %(reviewer)s: field %(field)s (the models said %(label)s) %(verdict)s",
            when=w.when(rv.at) if w.when is not None and rv.at else rv.when,
            reviewer=rv.reviewer,
            field=rv.field,
            label=rv.model_label,
            verdict=verdict,
        )
        doc.one_line(said + comment)
    if len(report.reviews) > MAX_REVIEWS:
        doc.one_line(_("… and %(n)s more on the station's sample page", n=len(report.reviews) - MAX_REVIEWS))


def _models(doc: _Doc, report: SlideReport, w: Words) -> None:
    """The models that classified the slide, with their hash and signing key."""
    _ = w.gettext
    doc.heading(_("Models"))
    for m in report.models:
        signed = ", " + _("signed %(date)s", date=m.signed_at[:10]) if m.signed_at else ""
        doc.line_text(f"{m.name} · sha256 {m.sha256[:16]} {_('· signing key')} {m.key_id}{signed}", 8)
    if not report.models:
        doc.line_text(_("No field classified yet."), 8)


def _images(
    doc: _Doc, report: SlideReport, reserve_mm: float, words: Words, per_row: int = 3, gap: float = 3.0
) -> None:
    _ = words.gettext
    cell_w = (doc.epw - gap * (per_row - 1)) / per_row
    img_h = cell_w * 0.5
    for start in range(0, len(report.images), per_row):
        row = report.images[start : start + per_row]
        y = doc.get_y()
        if y + img_h + 5 + LINE_MM > doc.h - doc.b_margin - reserve_mm:
            doc.one_line(_("More fields on the station's sample page: %(n)s", n=len(report.images) - start))
            return
        for i, im in enumerate(row):
            x = doc.l_margin + i * (cell_w + gap)
            data = shrink_jpeg(im.path) if im.path is not None else None
            if data is not None:
                doc.image(data, x=x, y=y, w=cell_w, h=img_h, keep_aspect_ratio=True)
            else:
                doc.set_xy(x, y)
                doc.font(7.5)
                doc.multi_cell(cell_w, img_h, doc.t(_("image not on this station")), border=1, align="C")
            doc.set_xy(x, y + img_h + 0.5)
            doc.font(7.5)
            doc.cell(cell_w, 3.5, doc.t(im.caption[:60]))
        doc.set_xy(doc.l_margin, y + img_h + 4.5)
