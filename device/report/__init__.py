"""The slide report: one printable page per sample for the clinician (no Flask here).

`slide.build_slide_report(store, sample_id, ...)` gathers a `SlideReport`; the web page renders it as
HTML (`device/web/report.py`, print stylesheet) and `pdf.render_pdf` as a PDF made on the station.
"""
