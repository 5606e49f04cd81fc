"""No function of the project's packages runs over MAX_LINES lines unless it says why.

A function says why with a comment `# long: <reason>` on its `def` line; a function others are
rewriting goes in ALLOWED below with the reason it stays long for now. Length is counted from the `def`
line to the function's last line (decorators not counted), over the source with `ast`.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("common", "device", "hub", "convert", "training", "scripts")
MAX_LINES = 60
LONG_MARK = "# long:"

# "path::qualified name" -> why it is still long. An entry that is no longer long fails the test below,
# so the list only shrinks.
ALLOWED: dict[str, str] = {
    "training/cells/build_crops.py::build": "one pass over both labs' images with a progress bar: detect, "
    "crop, screen and count what each rule removes",
    "training/cells/card.py::section": "writes the model card's cell section, one line per figure",
    "training/cells/evaluate.py::markdown": "writes the results table, one row per variant and model",
    "training/cells/evaluate.py::cell_figures": "every per-cell figure from one decision table, side by "
    "side (accuracy never alone), in one pass",
    "scripts/docs_screenshots.py::shoot": "a browser script: one page and screenshot after another",
    "scripts/docs_screenshots.py::shoot_calibration": "a browser script: one page and screenshot after "
    "another",
}


def long_functions(source: str, path: str, max_lines: int = MAX_LINES) -> dict[str, int]:
    """`path::qualname` -> lines, for each function longer than `max_lines` not marked `# long:`."""
    lines = source.splitlines()
    found: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                length = child.end_lineno - child.lineno + 1
                if length > max_lines and LONG_MARK not in lines[child.lineno - 1]:
                    found[f"{path}::{name}"] = length
                visit(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return found


def project_long_functions() -> dict[str, int]:
    found: dict[str, int] = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            found.update(long_functions(path.read_text(encoding="utf-8"), rel))
    return found


def test_the_check_finds_a_long_function_and_reads_its_reason() -> None:
    body = "\n".join(f"        x{i} = {i}" for i in range(MAX_LINES))
    source = f"class A:\n    def f(self):\n{body}\n\n\ndef g():\n    return 1\n"
    assert long_functions(source, "m.py") == {"m.py::A.f": MAX_LINES + 1}
    marked = source.replace("def f(self):", "def f(self):  # long: a table of values")
    assert long_functions(marked, "m.py") == {}


def test_no_function_is_long_without_a_reason() -> None:
    unexplained = {k: n for k, n in project_long_functions().items() if k not in ALLOWED}
    assert not unexplained, (
        f"functions over {MAX_LINES} lines: split them into named steps, or say why on the def line "
        f"({LONG_MARK} <reason>):\n" + "\n".join(f"{k} ({n} lines)" for k, n in sorted(unexplained.items()))
    )


def test_every_allowed_function_is_still_long() -> None:
    found = project_long_functions()
    stale = sorted(k for k in ALLOWED if k not in found)
    assert not stale, "no longer over the limit (remove from ALLOWED):\n" + "\n".join(stale)


def test_every_allowance_says_why() -> None:
    assert all(reason.strip() for reason in ALLOWED.values())
