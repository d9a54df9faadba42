"""The layers point one way: ``loaders`` (the bottom) imports neither the demo stack, Airflow,
the Airflow glue nor the dashboard, and no module of the project imports itself through others.
An AST scan of the source, function-level imports included (a lazy import is still a
dependency)."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# each package of the project and where its source lives
PACKAGES = {
    "loaders": REPO / "loaders",
    "music_elt_airflow": REPO / "dags" / "music_elt_airflow",
    "dashboard": REPO / "dashboard",
    "deploy": REPO / "deploy",
    "bench": REPO / "bench",
}
# the demo stack sits inside loaders/ but above the rest of it, like the Airflow glue
ABOVE_LOADERS = ("loaders.demo", "airflow", "music_elt_airflow", "dashboard")
# the CLI, the top of loaders, starts the embedded stack (generate, seed, the RDS stand-in)
ALLOWED = {"loaders.cli": {"loaders.demo"}}


def _modules() -> dict[str, Path]:
    found = {}
    for package, root in PACKAGES.items():
        for path in sorted(root.rglob("*.py")):
            parts = (package, *path.relative_to(root).with_suffix("").parts)
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    for path in sorted((REPO / "dags").glob("*.py")):
        found[f"dags.{path.stem}"] = path
    return found


def _imports(module: str, path: Path, known: dict[str, Path]) -> Iterator[str]:
    """Every module ``module`` imports when it runs, at any level of its code (imports under
    ``if TYPE_CHECKING:`` serve the type checker only): a project module when the name is one
    (``from loaders import rds`` is ``loaders.rds``), else the name itself."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING")
        for statement in node.body
        for inner in ast.walk(statement)
    }
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base


def _graph() -> dict[str, set[str]]:
    known = _modules()
    return {
        module: {name for name in _imports(module, path, known) if name in known} - {module}
        for module, path in known.items()
    }


def test_loaders_import_nothing_above_them() -> None:
    known = _modules()
    wrong = []
    for module, path in known.items():
        if not _within(module, ("loaders",)) or _within(module, ABOVE_LOADERS):
            continue
        for name in _imports(module, path, known):
            if _within(name, ABOVE_LOADERS) and not _within(name, ALLOWED.get(module, ())):
                wrong.append(f"{module} imports {name}")
    assert not wrong, wrong


def _within(module: str, packages: tuple[str, ...] | set[str]) -> bool:
    return any(module == p or module.startswith(f"{p}.") for p in packages)


def test_the_scan_sees_the_imports_it_forbids() -> None:
    """The scan is not blind: the CLI's import of the demo stack, the glue's of Airflow."""
    known = _modules()
    cli = set(_imports("loaders.cli", known["loaders.cli"], known))
    assert "loaders.demo.embedded" in cli
    runtime = set(_imports("music_elt_airflow.runtime", known["music_elt_airflow.runtime"], known))
    assert {"airflow.sdk", "loaders.rds", "loaders.demo.embedded"} <= runtime


def test_loaders_alone_never_start_the_demo_stack(tmp_path: Path) -> None:
    """Without a DSN, loaders.rds asks for one unless an entry point handed it the embedded
    stand-in (the CLI, the DAG's glue); the demo package stays unloaded."""
    probe = (
        "import sys\n"
        "from loaders import rds\n"
        "from loaders.config import ConfigError, Settings\n"
        "try:\n"
        f"    with rds.connect(Settings.from_env({{}}, workdir={str(tmp_path)!r})):\n"
        "        pass\n"
        "except ConfigError as exc:\n"
        "    print(exc)\n"
        "print('loaders.demo' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert done.stdout.splitlines() == [
        "no MUSIC_ELT_RDS_DSN: set it to your RDS database (the embedded stand-in runs under "
        "music-elt and the DAG only)",
        "False",
    ]
    assert not (tmp_path / "rds-pgdata").exists()


def test_no_import_cycles() -> None:
    graph = _graph()
    assert [component for component in _components(graph) if len(component) > 1] == []


def test_the_cycle_check_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert [sorted(c) for c in _components(graph) if len(c) > 1] == [["a", "b", "c"]]


def _components(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of ``graph`` (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.add(top)
                if top == node:
                    break
            found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found
