"""Model cards (MODEL.md) as HTML, with markdown-it-py: CommonMark plus tables, raw HTML disabled
(shown as text), no links or images (a model card is read offline; a URL stays visible as text).
Headings are shifted down one level because the page owns <h1>."""

from __future__ import annotations

from functools import lru_cache

from markdown_it import MarkdownIt
from markupsafe import Markup


@lru_cache(maxsize=1)
def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable("table")
    md.disable(["link", "image", "autolink"])
    return md


def render(text: str) -> Markup:
    md = _parser()
    tokens = md.parse(text.replace("\r\n", "\n"))
    for tok in tokens:
        if tok.type in ("heading_open", "heading_close"):
            tok.tag = f"h{min(int(tok.tag[1]) + 1, 6)}"
        elif tok.type == "table_open":
            tok.attrSet("class", "grid")
    return Markup(md.renderer.render(tokens, md.options, {}))  # noqa: S704 - html=False: text is escaped
