"""The code's shape: imports point one way, no cycles, short modules and functions.

Imports are read from the source (every `import` and `from ... import`, also those inside
functions), so a cycle hidden by an import placed in a function is found too.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("flows", "tasks", "shards", "model")
# What each folder may import from the others: flows -> tasks -> shards, flows -> model -> shards.
ALLOWED = {
    "flows": {"tasks", "shards", "model"},
    "tasks": {"shards"},
    "model": {"shards"},
    "shards": set(),
}
MAX_TASK_MODULE_LINES = 350
MAX_FUNCTION_LINES = 50


def modules() -> dict[str, Path]:
    """Every module of the four folders, by its dotted name."""
    found = {}
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports(path: Path, name: str, known: dict[str, Path]) -> set[str]:
    """The project modules `path` imports, anywhere in it."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        out |= {t for t in targets if t in known}
    return out - {name}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, name, known) for name, path in known.items()}


def test_imports_point_one_way():
    wrong = [
        f"{a} imports {b}"
        for a, targets in graph().items()
        for b in targets
        if (fa := a.split(".")[0]) != (fb := b.split(".")[0]) and fb not in ALLOWED[fa]
    ]
    assert wrong == []


def test_no_import_cycles():
    edges = graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    assert cycles == []


def test_task_modules_are_short():
    long = {
        str(p.relative_to(ROOT)): n
        for p in sorted((ROOT / "tasks").rglob("*.py"))
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_TASK_MODULE_LINES
    }
    assert long == {}


def function_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """A function's lines from its `def` to its end, its docstring left out."""
    lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
    first = node.body[0]
    docstring = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
    if docstring and isinstance(first.value.value, str):  # type: ignore[attr-defined]
        lines -= first.end_lineno - first.lineno + 1  # type: ignore[operator]
    return lines


@pytest.mark.parametrize("folder", FOLDERS)
def test_functions_are_short(folder):
    long = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            is_function = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            if is_function and (lines := function_lines(node)) > MAX_FUNCTION_LINES:
                long[f"{path.relative_to(ROOT)}:{node.name}"] = lines
    assert long == {}
