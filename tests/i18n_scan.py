"""Find words in Jinja templates that escape the message catalogue (used by tests/test_i18n.py).

Every `{{ }}` / `{% %}` / `{# #}` construct is replaced by a blank placeholder, then the HTML left is
parsed: text nodes and translatable attributes holding a word are reported. String literals inside
Jinja expressions that read as words (a space between letters) and are not an argument of `_()`,
`gettext()` or `ngettext()` are reported too.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

from jinja2 import Environment

TRANSLATABLE_ATTRS = {"title", "placeholder", "aria-label", "alt", "data-confirm", "label"}
#: Text that is not a word in any language: the brand, units, symbols.
ALLOWED = {"smearscope", "µm", "px", "sha"}
WORD = re.compile(r"[^\W\d_]{2,}")
CALLS = {"_", "gettext", "ngettext", "lazy_gettext"}


def _words(text: str) -> list[str]:
    return [w for w in WORD.findall(text) if w.lower() not in ALLOWED]


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style", "code"):
            self._skip += 1
        for name, value in attrs:
            if value and name in TRANSLATABLE_ATTRS and _words(value):
                self.found.append(f"<{tag} {name}={value.strip()!r}>")
            if tag == "input" and name == "value" and value and _words(value):
                kinds = dict(attrs).get("type", "")
                if kinds in ("submit", "button"):
                    self.found.append(f"<input value={value!r}>")

    def handle_endtag(self, tag):
        if tag in ("script", "style", "code") and self._skip:
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip and _words(data):
            self.found.append(data.strip())


def untranslated(source: str) -> list[str]:
    """The words in one template's source that are not in the catalogue."""
    env = Environment(extensions=["jinja2.ext.i18n"])
    html: list[str] = []
    found: list[str] = []
    depth = 0  # inside {% trans %} … {% endtrans %}
    tokens = list(env.lex(source))
    for i, (_line, kind, value) in enumerate(tokens):
        if kind == "data":
            html.append(value if depth == 0 else " ")
            continue
        if kind == "name" and value in ("trans", "pluralize"):
            depth += value == "trans"
        elif kind == "name" and value == "endtrans":
            depth -= 1
        if kind == "string" and depth == 0 and re.search(r"[^\W\d_]{2,}\s+[^\W\d_]", value):
            prev = [v for _l, k, v in tokens[max(0, i - 2) : i] if k not in ("whitespace",)]
            if not (len(prev) == 2 and prev[0] in CALLS and prev[1] == "("):
                found.append(value)
        if kind.endswith("_begin"):
            html.append(" ")
    parser = _Collector()
    parser.feed("".join(html))
    parser.close()
    return found + parser.found
