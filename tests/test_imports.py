"""The package's import graph: no module imports itself back at import time (issue 9, part 3).

``inpaint/diffusion.py`` <-> ``weights.py`` <-> ``inpaint/tiny.py`` used to form a cycle through the scheduler
table; it now lives in the leaf module ``inpaint/schedulers.py``. The graph is read from the source (``ast``), so
the test costs no import: an edge is a module-level ``import``/``from ... import`` of one of our modules (imports
inside functions run later and are left out), plus the implicit import of each parent package.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "inpaint_anon"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports at import time (module level, ``if TYPE_CHECKING:`` left out)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        imported: set[str] = set()
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        parents = {".".join(m.split(".")[:k]) for m in imported for k in range(1, m.count(".") + 1)}
        graph[name] = {m for m in imported | parents
                       if m in modules and m != name and not name.startswith(f"{m}.")}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in sorted(graph.get(module, ())):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return cycles


def test_cycle_finder_finds_a_cycle_and_only_the_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert import_cycles(graph) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph()
    assert {"inpaint_anon.weights", "inpaint_anon.inpaint.diffusion", "inpaint_anon.inpaint.tiny"} <= set(graph)
    assert import_cycles(graph) == []


def test_the_scheduler_table_is_a_leaf_that_the_engine_weights_and_tiny_models_share() -> None:
    graph = import_graph()
    assert graph["inpaint_anon.inpaint.schedulers"] == {"inpaint_anon.errors"}
    for user in ("inpaint_anon.weights", "inpaint_anon.inpaint.diffusion", "inpaint_anon.inpaint.tiny"):
        assert "inpaint_anon.inpaint.schedulers" in graph[user], user
    assert "inpaint_anon.inpaint.diffusion" not in graph["inpaint_anon.weights"]
    assert "inpaint_anon.weights" not in graph["inpaint_anon.inpaint.tiny"]
