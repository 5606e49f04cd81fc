"""The PDF report's section for a slide counted cell by cell: the figures (N of target, blasts, blast share
with its 95% interval), the differential table (blasts first, what is counted apart listed), who verified
the call, and a small gallery of the blast and unclassified cells, in the reader's language (the report
page's msgids, device/web/templates/report.html). `render_cells` does nothing for a slide of fields.
Kept apart from `pdf.py`, which calls it once after the slide call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from fpdf import FPDF

from device.report.slide import SlideReport


class Words(Protocol):
    """What the section takes of the report's `device.report.pdf.Words` (named here: pdf.py imports
    this module)."""

    @property
    def gettext(self) -> Callable[..., str]: ...

    @property
    def percent(self) -> Callable[[float], str]: ...


THUMB_MM = 15.0
GAP_MM = 1.6
MAX_ROWS = 2


def render_cells(doc: FPDF, report: SlideReport, w: Words) -> None:
    cells = report.cells
    if cells is None:
        return
    t = getattr(doc, "t", str)  # the document's own text filter (a Latin-1 font cannot draw every name)
    _ = w.gettext
    s = cells.summary
    doc.set_font(size=9.5, style="B")
    doc.multi_cell(0, 4.6, t(figures_text(s, w)), new_x="LMARGIN", new_y="NEXT")
    doc.set_text_color(*((30, 122, 60) if s.get("verified") else (95, 90, 102)))
    doc.multi_cell(0, 4.4, t(verified_text(s, _)), new_x="LMARGIN", new_y="NEXT")
    doc.set_text_color(29, 27, 32)
    doc.set_font(size=8.5, style="")
    with doc.table(
        col_widths=(80, 25, 35), width=140, align="L", line_height=4.4, first_row_as_headings=True
    ) as table:
        table.row([t(x) for x in (_("Type"), _("Cells"), _("Share of counted"))])
        for row in cells.rows:
            share = "—" if row.share is None else w.percent(row.share)
            name = row.title(_) + (f" ({_('blast')})" if row.blast else "")
            table.row([t(name), str(row.n), t(share)])
    if cells.images:
        _gallery(doc, cells.images, cells.more_images, t, _)


def figures_text(s: dict[str, Any], w: Words) -> str:
    """The figures line: "10 of 10 white cells counted · 3 blast(s) · blast share 30.0% (95% CI …)"."""
    _ = w.gettext
    counted = _(
        "%(n)s of %(target)s white cells counted · %(blasts)s blast(s)",
        n=s["counted"],
        target=s["target"],
        blasts=s["blasts"],
    )
    if s.get("blast_pct") is None:
        return f"{counted} · {_('blast share: none yet')}"
    share = _(
        "blast share %(pct)s (95%% CI %(low)s–%(high)s)",
        pct=w.percent(s["blast_pct"] / 100),
        low=w.percent(s["ci_low_pct"] / 100),
        high=w.percent(s["ci_high_pct"] / 100),
    )
    return f"{counted} · {share}"


def verified_text(s: dict[str, Any], _: Callable[..., str]) -> str:
    """Who verified the call, or what is left to review (device/web/cell_words.py's msgids)."""
    if s.get("verified"):
        return _("Verified by %(names)s.", names=", ".join(s.get("verified_by") or []))
    if s.get("to_review"):
        return _("Not verified yet: %(n)s blast or unclassified cell(s) to review.", n=s["to_review"])
    return _("Not verified yet: no cell reviewed.")


def _gallery(doc: FPDF, images, more: int, t, _: Callable[..., str]) -> None:
    doc.ln(1)
    doc.set_font(size=8.5, style="B")
    doc.cell(0, 4.2, t(_("Blast and unclassified cells")), new_x="LMARGIN", new_y="NEXT")
    per_row = max(1, int((doc.epw + GAP_MM) // (THUMB_MM + GAP_MM)))
    shown = images[: per_row * MAX_ROWS]
    doc.set_font(size=5.5)
    for start in range(0, len(shown), per_row):
        y = doc.get_y()
        for i, im in enumerate(shown[start : start + per_row]):
            x = doc.l_margin + i * (THUMB_MM + GAP_MM)
            if im.path is not None:
                doc.image(str(im.path), x=x, y=y, w=THUMB_MM, h=THUMB_MM, keep_aspect_ratio=True)
            else:
                doc.rect(x, y, THUMB_MM, THUMB_MM)
            doc.set_xy(x, y + THUMB_MM + 0.2)
            doc.cell(THUMB_MM, 2.4, t(im.caption_text(_)[:22]))
        doc.set_xy(doc.l_margin, y + THUMB_MM + 3)
    left = more + len(images) - len(shown)
    if left:
        doc.set_font(size=7.5)
        doc.cell(
            0,
            3.6,
            t(_("… and %(n)s more on the station's sample page", n=left)),
            new_x="LMARGIN",
            new_y="NEXT",
        )
