"""The package's shape: no import cycle between its modules, lazy imports included."""

from __future__ import annotations

import ast
from pathlib import Path

import headpursuit

ROOT = Path(headpursuit.__file__).parent
PACKAGE = "headpursuit"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    relative = Path(*name.split(".")[1:]) if "." in name else Path()
    return (ROOT / relative).with_suffix(".py").is_file() or (
        ROOT / relative / "__init__.py"
    ).is_file()


def _imports(path: Path) -> set[str]:
    """Every headpursuit module a file imports, at module level or inside functions.

    ``from P import x`` counts as importing ``P.x`` when that is a module, else ``P``.
    The implicit import of a module's parent packages is not an edge.
    """
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:
                child = f"{target}.{alias.name}"
                found.add(child if _is_module(child) else target)
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    """``module -> modules it imports`` for every module of the package."""
    return {_module_name(path): _imports(path) for path in sorted(ROOT.rglob("*.py"))}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_graph_sees_lazy_and_relative_imports():
    graph = import_graph()
    assert "headpursuit.models.zoo" in graph["headpursuit.models.loading"]
    assert "headpursuit.ranking.pursuit" in graph["headpursuit.ranking.head_ranking"]
    # `headpursuit.cli.pipeline` imports the ranking criteria inside a function.
    assert "headpursuit.ranking.criteria" in graph["headpursuit.cli.pipeline"]


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle or [])


#: The pipeline's stages in data-flow order; a module may import only from its own stage
#: or an earlier one (the package's ``__init__`` re-exports everything and is left out).
STAGES = [
    (
        "headpursuit._version",
        "headpursuit.errors",
        "headpursuit.heads",
        "headpursuit.io",
        "headpursuit.distributed",
        "headpursuit.protocol",
    ),
    ("headpursuit.models",),
    ("headpursuit.activations",),
    ("headpursuit.ranking",),
    ("headpursuit.steering",),
    ("headpursuit.evaluation",),
    ("headpursuit.report",),
    ("headpursuit.cli", "headpursuit.__main__"),
]


def _stage(module: str) -> int:
    for index, prefixes in enumerate(STAGES):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    raise AssertionError(f"{module} belongs to no stage; add it to STAGES")


def test_data_flows_one_way():
    backwards = [
        f"{source} -> {target}"
        for source, targets in import_graph().items()
        if source != PACKAGE
        for target in targets
        if _stage(target) > _stage(source)
    ]
    assert not backwards, backwards
