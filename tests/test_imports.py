"""Import structure of the package, read from the source with ``ast`` (nothing is imported):
no import cycle between its modules, and no module using another module's private names
(``from x import _name``, ``x._name``). A package's name itself may start with an underscore
(``_qt``, the only home of Qt code)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = "napari_liif"


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    out = {}
    for path in sorted((SRC / PKG).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _resolve(current: str, module: str | None, level: int) -> str:
    """The absolute name of ``from <level dots><module> import ...`` written in ``current``."""
    if level == 0:
        return module or ""
    base = current.split(".")
    if not _is_package(current):
        base = base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


class _Reader(ast.NodeVisitor):
    """Collects a module's imports of package modules (any depth: module level or inside a
    function) and its uses of other modules' private names."""

    def __init__(self, name: str):
        self.name = name
        self.imports: set[str] = set()
        self.bound: dict[str, str] = {}  # local name -> package module it refers to
        self.problems: list[str] = []

    def _where(self, node) -> str:
        return f"{MODULES[self.name].relative_to(SRC)}:{node.lineno}"

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name == PKG or alias.name.startswith(PKG + "."):
                self.imports.add(alias.name)
                if alias.asname:
                    self.bound[alias.asname] = alias.name
                else:
                    self.bound[alias.name.split(".")[0]] = alias.name.split(".")[0]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        target = _resolve(self.name, node.module, node.level)
        if not (target == PKG or target.startswith(PKG + ".")):
            return
        for alias in node.names:
            sub = f"{target}.{alias.name}"
            if sub in MODULES:  # a submodule
                self.imports.add(sub)
                self.bound[alias.asname or alias.name] = sub
                continue
            self.imports.add(target)
            if _private(alias.name) and target != self.name:
                self.problems.append(f"{self._where(node)}: from {target} import {alias.name}")
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        owner = self._module_of(node.value)
        if owner is not None and owner != self.name:
            sub = f"{owner}.{node.attr}"
            if sub not in MODULES and _private(node.attr):
                self.problems.append(f"{self._where(node)}: {owner}.{node.attr}")
        self.generic_visit(node)

    def _module_of(self, node) -> str | None:
        if isinstance(node, ast.Name):
            return self.bound.get(node.id)
        if isinstance(node, ast.Attribute):
            owner = self._module_of(node.value)
            if owner is not None and f"{owner}.{node.attr}" in MODULES:
                return f"{owner}.{node.attr}"
        return None


def _read_all() -> dict[str, _Reader]:
    readers = {}
    for name, path in MODULES.items():
        r = _Reader(name)
        r.visit(ast.parse(path.read_text(), str(path)))
        readers[name] = r
    return readers


READERS = _read_all()


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_reader_sees_the_package():
    """The checks below are not vacuous: known modules and edges are found."""
    assert {"napari_liif.field", "napari_liif.latents", "napari_liif.grid", "napari_liif.models.family",
            "napari_liif._qt.controller"} <= set(MODULES)
    assert {"napari_liif.latents", "napari_liif.grid", "napari_liif.models.family"} <= READERS["napari_liif.field"].imports
    assert "napari_liif.models.registry" in READERS["napari_liif.models.edsr"].imports
    # and they would catch a cycle and a private import
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    probe = _Reader("napari_liif.field")
    probe.visit(ast.parse("from .latents import _secret\nfrom . import grid\ngrid._hidden\nimport napari_liif.api as a\na._x"))
    assert [p.split(": ", 1)[1] for p in probe.problems] == [
        "from napari_liif.latents import _secret", "napari_liif.grid._hidden", "napari_liif.api._x"]


def test_no_import_cycle():
    graph = {name: {m for m in r.imports if m in MODULES and m != name} for name, r in READERS.items()}
    assert _cycles(graph) == []


def test_no_module_uses_another_modules_private_names():
    problems = [p for r in READERS.values() for p in r.problems]
    assert problems == []
