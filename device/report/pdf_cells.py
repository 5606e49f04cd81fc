"""The PDF report's section for a slide counted cell by cell: the figures (N of target, blasts, blast share
with its 95% interval), the differential table (blasts first, what is counted apart listed), who verified
the call, and a small gallery of the blast and unclassified cells. `render_cells` does nothing for a
slide of fields. Kept apart from `pdf.py`, which calls it once after the slide call."""

from __future__ import annotations

from fpdf import FPDF

from device.report.slide import SlideReport

THUMB_MM = 15.0
GAP_MM = 1.6
MAX_ROWS = 2


def render_cells(doc: FPDF, report: SlideReport) -> None:
    cells = report.cells
    if cells is None:
        return
    t = getattr(doc, "t", str)  # the document's own text filter (a Latin-1 font cannot draw every name)
    doc.set_font(size=9.5, style="B")
    doc.multi_cell(0, 4.6, t(cells.figures_line), new_x="LMARGIN", new_y="NEXT")
    verified = bool(cells.summary.get("verified"))
    doc.set_text_color(*((30, 122, 60) if verified else (95, 90, 102)))
    doc.multi_cell(0, 4.4, t(cells.verified_line), new_x="LMARGIN", new_y="NEXT")
    doc.set_text_color(29, 27, 32)
    doc.set_font(size=8.5, style="")
    with doc.table(
        col_widths=(80, 25, 35), width=140, align="L", line_height=4.4, first_row_as_headings=True
    ) as table:
        table.row([t(x) for x in ("Type", "Cells", "Share of counted")])
        for row in cells.rows:
            share = "—" if row.share is None else f"{100 * row.share:.1f}%"
            table.row([t(row.display + (" (blast)" if row.blast else "")), str(row.n), share])
    if cells.images:
        _gallery(doc, cells.images, cells.more_images, t)


def _gallery(doc: FPDF, images, more: int, t) -> None:
    doc.ln(1)
    doc.set_font(size=8.5, style="B")
    doc.cell(0, 4.2, t("Blast and unclassified cells"), new_x="LMARGIN", new_y="NEXT")
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
            doc.cell(THUMB_MM, 2.4, t(im.caption[:22]))
        doc.set_xy(doc.l_margin, y + THUMB_MM + 3)
    left = more + len(images) - len(shown)
    if left:
        doc.set_font(size=7.5)
        doc.cell(0, 3.6, t(f"… and {left} more on the station's sample page"), new_x="LMARGIN", new_y="NEXT")
