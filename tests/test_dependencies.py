"""Every third-party package our code imports is declared in pyproject.toml, where it belongs.

A package that only arrives as someone else's dependency (trio brings outcome and
sniffio, starlette brings anyio) works until that someone drops it. The imports are
read with `ast`, mapped to the distributions that provide them with
`importlib.metadata.packages_distributions()`, and compared with the requirements
pyproject.toml declares: what ``import trio_mesa`` runs needs the core dependencies
alone, the chaos server needs no more than the ``server`` extra, and anything else
(lazy, optional, test-only) must at least be declared somewhere.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OURS = {"trio_mesa", "fault_injection"}
#: fault_injection's chaos server: what ``pip install 'trio-mesa[server]'`` must be enough for.
SERVER_PACKAGE = ROOT / "fault_injection" / "chaos"


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, requirement
    return _normalize(match.group(1))


def _declared(pyproject: dict[str, Any]) -> dict[str, set[str]]:
    """Section (``"core"`` or an extra's name) -> normalized distribution names."""
    project = pyproject["project"]
    sections = {"core": {_requirement_name(r) for r in project.get("dependencies", [])}}
    for extra, requirements in project.get("optional-dependencies", {}).items():
        sections[extra] = {_requirement_name(r) for r in requirements}
    return sections


def _imports(path: Path) -> Iterator[tuple[str, int, bool]]:
    """(top-level module, line, imported when the module is) for each absolute import.

    An import inside a function, an ``if TYPE_CHECKING:`` block or a ``try`` that
    handles ``ImportError`` is not run by importing the module: it is lazy or optional.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))

    def walk(node: ast.AST, eager: bool) -> Iterator[tuple[str, int, bool]]:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.partition(".")[0], node.lineno, eager
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.partition(".")[0], node.lineno, eager
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            eager = False
        elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (i for child in node.body for i in walk(child, False))
            yield from (i for child in node.orelse for i in walk(child, eager))
            return
        elif isinstance(node, ast.Try) and _handles_import_error(node):
            yield from (i for child in node.body for i in walk(child, False))
            for child in [*node.handlers, *node.orelse, *node.finalbody]:
                yield from walk(child, eager)
            return
        for child in ast.iter_child_nodes(node):
            yield from walk(child, eager)

    yield from walk(tree, True)


def _handles_import_error(node: ast.Try) -> bool:
    names = {"ImportError", "ModuleNotFoundError"}
    return any(
        h.type is not None and names & {n.id for n in ast.walk(h.type) if isinstance(n, ast.Name)}
        for h in node.handlers
    )


def undeclared(pyproject: dict[str, Any]) -> list[str]:
    """What trio_mesa and fault_injection import that pyproject does not declare (or not
    where it is needed), one readable line each."""
    sections = _declared(pyproject)
    anywhere = set().union(*sections.values())
    providers = importlib.metadata.packages_distributions()
    problems = []
    for package in sorted(OURS):
        for path in sorted((ROOT / package).rglob("*.py")):
            where = path.relative_to(ROOT)
            if package == "trio_mesa":
                eager_ok, eager_section = sections["core"], "the core dependencies"
            elif package == "fault_injection" and path.is_relative_to(SERVER_PACKAGE):
                eager_ok = sections["core"] | sections["server"]
                eager_section = "the core dependencies or the server extra"
            else:
                eager_ok, eager_section = anywhere, "pyproject.toml"
            for module, line, eager in _imports(path):
                if module in sys.stdlib_module_names or module in OURS:
                    continue
                dists = {_normalize(d) for d in providers.get(module, [])}
                if not dists:
                    # A lazy import of an opt-in extra not installed here (ray) is fine
                    # when that extra declares a distribution of the module's name.
                    if not (not eager and _normalize(module) in anywhere):
                        problems.append(f"{where}:{line}: {module!r} is not installed")
                    continue
                allowed, section = (eager_ok, eager_section) if eager else (anywhere, "pyproject")
                if not dists & allowed:
                    problems.append(
                        f"{where}:{line}: imports {module!r} ({', '.join(sorted(dists))}), "
                        f"not declared in {section}"
                    )
    return problems


def _pyproject() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


def test_every_third_party_import_is_declared_where_it_is_needed() -> None:
    assert undeclared(_pyproject()) == []


def test_a_dependency_removed_from_pyproject_is_reported() -> None:
    pyproject = _pyproject()
    project = pyproject["project"]
    project["dependencies"] = [
        r for r in project["dependencies"] if _requirement_name(r) not in {"outcome", "sniffio"}
    ]
    server = project["optional-dependencies"]["server"]
    project["optional-dependencies"]["server"] = [
        r for r in server if _requirement_name(r) != "anyio"
    ]
    problems = undeclared(pyproject)
    assert any("_guest.py" in p and "'outcome'" in p for p in problems), problems
    assert any("_trio_asyncio_batching.py" in p and "'sniffio'" in p for p in problems), problems
    assert any("chaos/_app.py" in p and "'anyio'" in p for p in problems), problems


def test_a_runtime_import_declared_only_as_an_extra_is_reported() -> None:
    # trio_mesa imports outcome when it is imported: an extra is not enough.
    pyproject = _pyproject()
    project = pyproject["project"]
    project["dependencies"] = [
        r for r in project["dependencies"] if _requirement_name(r) != "outcome"
    ]
    project["optional-dependencies"]["test"].append("outcome")
    problems = undeclared(pyproject)
    assert any("'outcome'" in p and "core dependencies" in p for p in problems), problems


def test_lazy_and_optional_imports_count_as_not_run_at_import(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "import trio\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import mesa_llm\n"
        "try:\n    import rich\nexcept ImportError:\n    rich = None\n"
        "def f():\n    import trio_asyncio\n"
        "from . import sibling\n"
    )
    assert sorted((m, eager) for m, _, eager in _imports(source)) == [
        ("mesa_llm", False),
        ("rich", False),
        ("trio", True),
        ("trio_asyncio", False),
        ("typing", True),
    ]
