"""Imports point down the layers, and no module imports itself through others (no import cycle).

Layers, lowest first (a module may import its own layer and any lower one):

    errors, paths, config, quiet (top-level modules)  <  core  <  data, models  <  rewards, edits, eval,
    sim, generation, generation_vllm, generate_job  <  train, integrations  <  engine  <  verbs, pipeline, studies, serve, report  <  cli

(``verbs``, the verb table, sits beside ``pipeline`` and ``report``: ``pipeline`` builds its stage types from it;
it imports ``report`` for the report verb and never ``pipeline``.)

Every ``import`` statement counts, also those inside functions (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "finealign"

LAYERS: dict[str, int] = {
    "errors": 0, "paths": 0, "config": 0, "quiet": 0, "resources": 0,
    "core": 1,
    "data": 2, "models": 2,
    "rewards": 3, "edits": 3, "eval": 3, "sim": 3, "generation": 3, "generation_vllm": 3, "generate_job": 3,
    "train": 4, "integrations": 4,
    "engine": 5,
    "verbs": 6, "pipeline": 6, "studies": 6, "serve": 6, "report": 6,
    "cli": 7,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _resolve(mod: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """finealign module -> the finealign modules it imports (``from pkg import submodule`` resolved)."""
    graph: dict[str, set[str]] = {}
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(mod, is_pkg, node)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for t in targets:
                while t and t not in mods:  # `import finealign.data.io as x` -> the deepest known module
                    t = t.rpartition(".")[0]
                if t.startswith("finealign") and t != mod:
                    deps.add(t)
        graph[mod] = deps
    return graph


def _layer(mod: str) -> int | None:
    parts = mod.split(".")
    if len(parts) == 1:
        return None  # the package itself: may import anything
    return LAYERS.get(parts[1])


GRAPH = _imports(_modules())


def test_every_module_has_a_layer():
    unknown = sorted({m.split(".")[1] for m in GRAPH if "." in m and m.split(".")[1] not in LAYERS})
    assert not unknown, f"add these to LAYERS in tests/test_layers.py: {unknown}"


def test_imports_point_down():
    bad = []
    for mod, deps in GRAPH.items():
        lm = _layer(mod)
        if lm is None:
            continue
        for d in sorted(deps):
            ld = _layer(d)
            if ld is not None and ld > lm:
                bad.append(f"{mod} (layer {lm}) imports {d} (layer {ld})")
    assert not bad, "imports up the layers:\n" + "\n".join(bad)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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


def test_no_import_cycles():
    # a package's __init__ re-exporting its submodules is not a cycle with them
    graph = {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in GRAPH.items()}
    cycles = _cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize("src, expect", [
    ("from ..cli.common import progress\n", "finealign.cli.common"),
    ("from .. import errors\n", "finealign.errors"),
    ("import finealign.core.ppo as p\n", "finealign.core.ppo"),
])
def test_the_parser_sees_imports(tmp_path, src, expect):
    # the checker itself: relative, package-member and absolute imports all resolve
    mods = {"finealign.train.x": tmp_path / "x.py", "finealign.cli.common": SRC / "cli" / "common.py",
            "finealign.errors": SRC / "errors.py", "finealign.core.ppo": SRC / "core" / "ppo.py",
            "finealign": SRC / "__init__.py"}
    (tmp_path / "x.py").write_text(src)
    assert expect in _imports(mods)["finealign.train.x"]
