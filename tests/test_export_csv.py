"""CSV export defuses spreadsheet formulas even behind leading whitespace (issue 13, item 7)."""

from __future__ import annotations

import pytest

from common.csvsafe import safe_cell as _safe_cell
from device.web.export import csv_rows


@pytest.mark.parametrize(
    "text",
    [
        '=HYPERLINK("http://x")',
        " =1+1",
        "\n=1+1",
        "\t=1+1",
        "\r\n@SUM(A1:A9)",
        "  +cmd|' /C calc'!A0",
        "\u00a0-2+3",
        "\uff1dSUM(A1)",
        "\tplain",
    ],
)
def test_formula_cells_are_quoted(text):
    assert _safe_cell(text) == "'" + text


@pytest.mark.parametrize("value", ["Pre", "looks fine", "0.9500", "", None, 3, 0.5, "a=b"])
def test_plain_cells_are_unchanged(value):
    assert _safe_cell(value) == value


def test_comment_with_leading_space_formula_is_defused_in_the_file():
    rec = {
        "id": "i", "seq": 1, "captured_at": "t", "sample_id": None, "source": "review", "kind": "review",
        "review_of": "x", "label": "Pre", "confidence": 1.0, "abstained": False, "reason": None,
        "quality": {}, "models": [], "image_sha256": None, "filename": None, "reviewer": "ann",
        "comment": " =HYPERLINK(\"http://evil\",\"x\")", "probabilities": {"Pre": 1.0},
    }  # fmt: skip
    lines = list(csv_rows([rec], ["Pre"], {}))
    assert "' =HYPERLINK" in lines[-1]
