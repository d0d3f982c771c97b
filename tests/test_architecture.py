"""The package's shape (DESIGN "Layout and import direction"), checked by walking the imports.

Imports inside ``if TYPE_CHECKING:`` blocks are not run, so they are left out: the rules
are about what loads what at run time.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "hostd"
MAX_LINES = 400


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path, package: str | None = None) -> set[str]:
    """hostd modules imported at run time by ``path`` (function-level imports included)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    if package is None:
        package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name.split(".")[0] == "hostd")
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.rsplit(".", child.level - 1)[0] if child.level > 1 else package
                    mod = f"{base}.{child.module}" if child.module else base
                else:
                    mod = child.module or ""
                if mod.split(".")[0] == "hostd":
                    found.add(mod)
                    for alias in child.names:  # ``from hostd.handlers import auth`` imports a module
                        if (PACKAGE.parent / (mod + "." + alias.name).replace(".", "/")).with_suffix(".py").exists():
                            found.add(f"{mod}.{alias.name}")
            visit(child)

    visit(tree)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for imported in _imports(path):
            # ``import hostd.a.b`` also runs ``hostd.a``; keep the module itself as the edge.
            while imported not in modules and "." in imported:
                imported = imported.rpartition(".")[0]
            if imported in modules and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_no_import_cycle() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def walk(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                walk(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            walk(node)
    assert cycles == []


def test_rpc_imports_no_handlers_upstream_or_server() -> None:
    bad = {
        (m, t)
        for m, targets in _graph().items()
        if _in(m, "hostd.rpc")
        for t in targets
        if _in(t, "hostd.handlers") or _in(t, "hostd.upstream") or t == "hostd.server"
    }
    assert bad == set()


def test_only_main_imports_cli_and_only_cli_imports_server() -> None:
    graph = _graph()
    cli_importers = {m for m, t in graph.items() if "hostd.cli" in t}
    server_importers = {m for m, t in graph.items() if "hostd.server" in t}
    assert cli_importers <= {"hostd.__main__"}
    assert server_importers <= {"hostd.cli"}


def test_no_module_over_400_lines() -> None:
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_the_walker_sees_a_cycle(tmp_path: Path) -> None:
    """The cycle check itself can fail: two modules importing each other are found."""
    a = tmp_path / "a.py"
    a.write_text(
        "from hostd.errors import WireError\nimport hostd.faults\nif TYPE_CHECKING:\n    import hostd.server\n"
    )
    assert _imports(a, package="hostd") == {"hostd.errors", "hostd.faults"}
