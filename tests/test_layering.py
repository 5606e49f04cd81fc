"""The layout table of DEVELOPERS.md, checked over the source with `ast`.

The rules: (a) each top-level package imports only the packages its row allows, nothing imports
tests/benchmarks/scripts, and `common` imports only the standard library and `cryptography`; (b) no
import circle between modules, counting imports inside functions too; (c) no circle between the rooms
(sub-packages and modules) of any package; (d) the CLI sub-command
modules (`device/commands/*`) are imported only by `device/cli.py` and each other, so library code never
leans on a command. Debt that must stay for now goes in EXCEPTIONS below, each edge with its reason.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("common", "device", "hub", "convert", "training")
NEVER_IMPORTED = {"tests", "benchmarks", "scripts"}

# Which of the project's top-level packages each package may import (DEVELOPERS.md, Layout): `common`
# (what station and hub must say and write alike) at the bottom, importing none; one chain device <
# convert < training (training writes bundles with convert's code; convert re-runs the training
# augmentation it holds); and the hub on its own beside them.
ALLOWED = {
    "common": {"common"},
    "device": {"device", "common"},
    "convert": {"convert", "device", "common"},
    "training": {"training", "convert", "device", "common"},
    "hub": {"hub", "common"},
}

# What `common` may import from outside the project: the standard library, and `cryptography` for the
# bundle signature check (station and hub both depend on it).
COMMON_THIRD_PARTY = {"cryptography"}

# (importer, imported) module edges that break a rule today, each with the reason it stays.
EXCEPTIONS: dict[tuple[str, str], str] = {}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_modules() -> dict[str, Path]:
    found = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            found[module_name(path)] = path
    return found


def imported_names(path: Path, name: str) -> set[str]:
    """Every module named by an import anywhere in the file (top level or inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                if node.level > 1:
                    base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base)
                mod = f"{prefix}.{node.module}" if node.module else prefix
            else:
                mod = node.module or ""
            names.add(mod)
            # `from pkg import sub` names the submodule when one exists.
            names.update(f"{mod}.{alias.name}" for alias in node.names)
    return names


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module an import name lands on (the longest matching module), or None."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph() -> dict[str, set[str]]:
    modules = source_modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for imported in imported_names(path, name):
            target = resolve(imported, modules)
            if target and target != name:
                edges.add(target)
        graph[name] = edges
    return graph


def raw_imports() -> dict[str, set[str]]:
    modules = source_modules()
    return {name: imported_names(path, name) for name, path in modules.items()}


def test_graph_sees_the_project() -> None:
    graph = import_graph()
    assert "device.cli" in graph and "hub.app" in graph
    assert "device.preprocess" in graph["device.models.ensemble"]
    assert "device.colour" in graph["device.preprocess"]  # an import inside a function counts


def test_packages_import_only_what_their_layer_allows() -> None:
    bad = []
    for name, targets in import_graph().items():
        allowed = ALLOWED[name.split(".")[0]]
        wrong = [t for t in targets if t.split(".")[0] not in allowed and (name, t) not in EXCEPTIONS]
        bad += [f"{name} -> {t}" for t in wrong]
    for name, imported in raw_imports().items():
        bad += [f"{name} -> {t}" for t in imported if t.split(".")[0] in NEVER_IMPORTED]
    assert not bad, "imports against the layout table:\n" + "\n".join(sorted(bad))


def test_common_imports_only_the_standard_library_and_cryptography() -> None:
    allowed = set(sys.stdlib_module_names) | COMMON_THIRD_PARTY | set(PACKAGES)
    bad = [
        f"{name} -> {target}"
        for name, imported in raw_imports().items()
        if name.split(".")[0] == "common"
        for target in imported
        if target and target.split(".")[0] not in allowed
    ]
    assert not bad, "common imports outside the standard library and cryptography:\n" + "\n".join(sorted(bad))


def test_library_code_does_not_import_cli_commands() -> None:
    bad = []
    for name, targets in import_graph().items():
        allowed = name == "device.cli" or name.startswith("device.commands")
        for target in targets:
            if target.startswith("device.commands") and not allowed and (name, target) not in EXCEPTIONS:
                bad.append(f"{name} -> {target}")
    assert not bad, "library modules importing CLI commands:\n" + "\n".join(sorted(bad))


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(start: str) -> None:
        # Iterative so a deep graph never hits the recursion limit.
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def package_parents(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Drop edges from a package's `__init__` into its own submodules and back: re-exports, not rooms."""
    packages = {name for name in graph if (ROOT / name.replace(".", "/") / "__init__.py").exists()}
    pruned = {}
    for name, targets in graph.items():
        keep = set()
        for target in targets:
            if name in packages and target.startswith(name + "."):
                continue
            if target in packages and name.startswith(target + "."):
                continue
            keep.add(target)
        pruned[name] = {t for t in keep if (name, t) not in EXCEPTIONS}
    return pruned


def test_find_cycles_reports_a_circle() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles() -> None:
    cycles = find_cycles(package_parents(import_graph()))
    assert not cycles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def room_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Imports between the rooms of each package: a module counts as its package's child it sits in
    (`device.optics.tiling` is the room `device.optics` inside `device`; `device.preprocess` is its own
    room). Only siblings are compared, so a package's `__init__` re-exporting its modules is no circle."""
    rooms: dict[str, set[str]] = {}
    for name, targets in graph.items():
        for target in targets:
            a, b = name.split("."), target.split(".")
            common = 0
            while common < min(len(a), len(b)) and a[common] == b[common]:
                common += 1
            if common == 0 or common >= min(len(a), len(b)):
                continue  # another top-level package (the layer rule's business) or parent/child
            ra, rb = ".".join(a[: common + 1]), ".".join(b[: common + 1])
            if (name, target) not in EXCEPTIONS:
                rooms.setdefault(ra, set()).add(rb)
    return rooms


def test_no_circles_between_rooms() -> None:
    cycles = find_cycles(room_graph(import_graph()))
    assert not cycles, "circles between packages/modules:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_room_graph_sees_a_package_circle() -> None:
    graph = {"d.p.a": {"d.q.b"}, "d.q.c": {"d.p.e"}, "d.p.e": set(), "d.q.b": set()}
    assert find_cycles(room_graph(graph)) == [["d.p", "d.q"]]


# Rooms that stay apart (DEVELOPERS.md, Layout): camera sources know nothing of frame analysis and the
# analysis takes frames, not cameras.
APART = [("device.camera", "device.optics"), ("device.optics", "device.camera")]


def test_rooms_that_stay_apart() -> None:
    bad = [
        f"{name} -> {target}"
        for name, targets in import_graph().items()
        for target in targets
        for a, b in APART
        if (name == a or name.startswith(a + ".")) and (target == b or target.startswith(b + "."))
    ]
    assert not bad, "imports between rooms kept apart:\n" + "\n".join(sorted(bad))
