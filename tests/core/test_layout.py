"""The package's shape: the core never imports a web framework, its modules import each other
without cycles, and the framework packages use only what a third party could import."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "watcher_auth"
INTEGRATIONS = ROOT / "integrations"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _runtime_imports(path: Path) -> set[str]:
    """Modules imported when ``path`` runs: top level, outside ``if TYPE_CHECKING``."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for inner in ast.walk(node):
            if isinstance(inner, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            if isinstance(inner, ast.Import):
                found.update(alias.name for alias in inner.names)
            elif isinstance(inner, ast.ImportFrom) and inner.module and inner.level == 0:
                found.add(inner.module)
                found.update(f"{inner.module}.{alias.name}" for alias in inner.names)
    return found


def _core_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in CORE.rglob("*.py") if "testing" not in p.parts}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        graph[name] = {
            target
            for target in _runtime_imports(path)
            if target in modules and target != name and target != package
        }
    return graph


def test_the_core_modules_import_each_other_without_a_cycle() -> None:
    graph = _core_graph()
    done: set[str] = set()
    path: list[str] = []

    def visit(module: str) -> None:
        if module in path:
            cycle = [*path[path.index(module) :], module]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if module in done:
            return
        path.append(module)
        for target in sorted(graph[module]):
            # A package's __init__ re-exports its modules; importing a sibling from the
            # package's own modules is the cycle that matters, so packages are followed too.
            visit(target)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


def test_the_framework_packages_import_only_public_core_names() -> None:
    private = []
    for path in INTEGRATIONS.rglob("*.py"):
        for target in _runtime_imports(path) | _function_imports(path):
            if target.startswith("watcher_auth") and any(
                part.startswith("_") for part in target.split(".")
            ):
                private.append(f"{path.relative_to(ROOT)}: {target}")
    assert private == []


def _function_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_importing_the_core_imports_no_web_framework_store_driver_or_httpx() -> None:
    code = (
        "import sys, watcher_auth, watcher_auth.v2, watcher_auth.stores;"
        "print(sorted(m for m in ('django', 'flask', 'fastapi', 'starlette', 'redis',"
        " 'sqlalchemy', 'psycopg', 'httpx') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert result.stdout.strip() == "[]"
