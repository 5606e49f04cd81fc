"""A tiny, safe Markdown subset for model cards (MODEL.md): headings, paragraphs, lists, tables,
fenced code, **bold**, *italic*, `code`. All text is HTML-escaped first; no raw HTML, no links
(a model card is read offline; a URL is shown as text)."""

from __future__ import annotations

import re

from markupsafe import Markup, escape

_INLINE = [
    (re.compile(r"`([^`]+)`"), r"<code>\1</code>"),
    (re.compile(r"\*\*([^*]+)\*\*"), r"<strong>\1</strong>"),
    (re.compile(r"(?<![\w*])\*([^*\s][^*]*)\*(?![\w*])"), r"<em>\1</em>"),
    (re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)"), r"\1 (\2)"),
]
_TABLE_SEP = re.compile(r"^\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?$")


def _inline(text: str) -> str:
    out = str(escape(text))
    for pattern, repl in _INLINE:
        out = pattern.sub(repl, out)
    return out


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def render(md: str) -> Markup:
    lines = md.replace("\r\n", "\n").split("\n")
    html: list[str] = []
    para: list[str] = []
    i = 0

    def flush_para() -> None:
        if para:
            html.append(f"<p>{_inline(' '.join(para))}</p>")
            para.clear()

    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("```"):
            flush_para()
            block = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith("```"):
                block.append(lines[i])
                i += 1
            html.append(f"<pre>{escape(chr(10).join(block))}</pre>")
            i += 1
            continue
        heading = re.match(r"^(#{1,6})\s+(.*)$", stripped)
        if heading:
            flush_para()
            level = min(len(heading.group(1)) + 1, 6)  # the page owns <h1>
            html.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
            i += 1
            continue
        if stripped.startswith("|") and i + 1 < len(lines) and _TABLE_SEP.match(lines[i + 1].strip()):
            flush_para()
            head = "".join(f"<th>{_inline(c)}</th>" for c in _cells(stripped))
            rows = []
            i += 2
            while i < len(lines) and lines[i].strip().startswith("|"):
                rows.append("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in _cells(lines[i])) + "</tr>")
                i += 1
            html.append(
                f'<table class="grid"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
            )
            continue
        item = re.match(r"^\s*(?:[-*+]|\d+\.)\s+(.*)$", line)
        if item:
            flush_para()
            ordered = bool(re.match(r"^\s*\d+\.", line))
            items = []
            while i < len(lines):
                m = re.match(r"^\s*(?:[-*+]|\d+\.)\s+(.*)$", lines[i])
                if m:
                    items.append(m.group(1))
                elif lines[i].startswith("  ") and lines[i].strip() and items:
                    items[-1] += " " + lines[i].strip()
                else:
                    break
                i += 1
            tag = "ol" if ordered else "ul"
            html.append(f"<{tag}>" + "".join(f"<li>{_inline(t)}</li>" for t in items) + f"</{tag}>")
            continue
        if stripped.startswith(">"):
            flush_para()
            html.append(f"<blockquote>{_inline(stripped.lstrip('> '))}</blockquote>")
            i += 1
            continue
        if not stripped:
            flush_para()
        else:
            para.append(stripped)
        i += 1
    flush_para()
    return Markup("\n".join(html))
