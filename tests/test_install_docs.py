"""The operations docs stay true: every relative link and picture they name exists, every command
they tell an admin to run is a real sub-command, and each guide carries the safety statement."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from device.cli import build_parser

DOCS = Path(__file__).resolve().parents[1] / "docs"
GUIDES = [
    "README.md",
    "hardware.md",
    "technician-guide.md",
    "admin-guide.md",
    "training-guide.md",
    "results.md",
]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("guide", GUIDES)
def test_relative_links_exist(guide: str) -> None:
    text = (DOCS / guide).read_text()
    targets = [t for t in LINK.findall(text) if not re.match(r"^[a-z]+:", t)]
    missing = [t for t in targets if not (DOCS / t).exists()]
    assert not missing, f"{guide} links to missing {missing}"


@pytest.mark.parametrize("guide", GUIDES)
def test_guides_say_it_is_not_a_diagnosis(guide: str) -> None:
    assert "not a diagnosis" in (DOCS / guide).read_text()


def _code(text: str) -> str:
    """Fenced blocks and inline code spans: where a reader copies commands from."""
    fenced = re.findall(r"```[^\n]*\n(.*?)```", text, flags=re.S)
    inline = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    return "\n".join(fenced + inline)


def _subcommands(parser) -> set[str]:
    return set(next(a for a in parser._actions if a.dest == "command").choices)


def test_documented_commands_exist() -> None:
    from hub.cli import build_parser as hub_parser

    device, hub = _subcommands(build_parser()), _subcommands(hub_parser())
    code = "\n".join(_code((DOCS / g).read_text()) for g in GUIDES)
    at_start = r"(?:^|sudo |/bin/|&& )"  # a command word, not an argument (createdb -O smearscope ...)
    used = set(re.findall(at_start + r"smearscope ([a-z][a-z-]*)", code, flags=re.M))
    used_hub = set(re.findall(at_start + r"smearscope-hub ([a-z][a-z-]*)", code, flags=re.M))
    assert used and used_hub
    assert used <= device, f"docs use smearscope {sorted(used - device)}, which do not exist"
    assert used_hub <= hub, f"docs use smearscope-hub {sorted(used_hub - hub)}, which do not exist"


ROOT = DOCS.parent


def test_front_door_readme_is_short_true_and_runs_what_ci_runs() -> None:
    """The README is a user's front door: two set-up commands (the test one is what CI runs), links that
    exist, the safety statement, every command it shows is real, and it stays short."""
    text = (ROOT / "README.md").read_text()
    assert "not a diagnosis" in text
    assert len(text.splitlines()) <= 160
    first_block = re.search(r"```sh\n(.*?)```", text, flags=re.S).group(1)
    commands = [ln.split("#")[0].strip() for ln in first_block.splitlines() if ln.strip()]
    assert commands == ["make run", "make test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test\b", ci, flags=re.M), ".ci/run must run the README's test command"
    targets = [t for t in LINK.findall(text) if not re.match(r"^[a-z]+:", t)]
    assert not [t for t in targets if not (ROOT / t).exists()]
    device = _subcommands(build_parser())
    used = set(re.findall(r"(?:^|`|sudo |/bin/)smearscope ([a-z][a-z-]*)", text, flags=re.M))
    assert used and used <= device, f"README uses smearscope {sorted(used - device)}"
