"""The package's shape: no import cycles between its files or its packages, and the engine
(analysis/) never names a source format."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "dora_diag"


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom, files: dict) -> list[str]:
    """The dora_diag modules an ``ImportFrom`` needs: the submodules it names, else its module."""
    base = module.split(".") if is_package else module.split(".")[:-1]
    if node.level:
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if not target.startswith("dora_diag"):
        return []
    submodules = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in files]
    return submodules or [target]


def import_graph() -> dict[str, set[str]]:
    """module -> the dora_diag modules it imports (at any depth of the file: lazy imports count)."""
    files = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                names = _resolve(module, path.name == "__init__.py", node, files)
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("dora_diag")]
            else:
                continue
            graph[module] |= {n for n in names if n in files and n != module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
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

    for v in graph:
        if v not in index:
            visit(v)
    return out


def _package(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 else module


def test_no_import_cycle_between_files():
    assert _cycles(import_graph()) == []


def test_no_import_cycle_between_packages():
    graph: dict[str, set[str]] = {}
    for m, deps in import_graph().items():
        graph.setdefault(_package(m), set()).update(_package(d) for d in deps if _package(d) != _package(m))
    assert _cycles(graph) == []


def test_engine_names_no_source_format():
    """analysis/ reaches sources through their declared interface, never by their type."""
    offenders = []
    for path in (SRC / "analysis").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for needle in ("isinstance(s, FullSource)", "FullSource", "AdapterSource", 'kind == "full"',
                       "kind == 'full'", ".kind ==", "LycorisSource"):
            if needle in text:
                offenders.append(f"{path.name}: {needle}")
    assert offenders == []
