"""The public surface is exactly what README documents, and it reprs as the package."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import fault_injection
import trio_mesa
import trio_mesa.compat

README = (Path(__file__).parent.parent / "README.md").read_text()


def _documented(package: str) -> set[str]:
    section = README.split("## Reference: every public name", 1)[1].split("\n## ", 1)[0]
    match = re.search(rf"^- `{re.escape(package)}`: (.*?)\.$", section, re.M | re.S)
    assert match, f"README lists no public names for {package}"
    return set(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", match.group(1)))


@pytest.mark.parametrize("package", [trio_mesa, trio_mesa.compat, fault_injection])
def test_public_names_are_exactly_what_readme_documents(package) -> None:
    assert set(package.__all__) == _documented(package.__name__)
    for name in package.__all__:
        assert hasattr(package, name), name


@pytest.mark.parametrize("package", [trio_mesa, trio_mesa.compat, fault_injection])
def test_public_classes_and_functions_repr_as_the_package(package) -> None:
    for name in package.__all__:
        obj = getattr(package, name)
        if isinstance(obj, type) or callable(obj):
            assert obj.__module__ == package.__name__, f"{name}: {obj.__module__}"
    if package is trio_mesa:
        assert repr(trio_mesa.StepReport) == "<class 'trio_mesa.StepReport'>"


def test_version_comes_from_the_package_metadata() -> None:
    from importlib.metadata import version

    assert trio_mesa.__version__ == version("trio-mesa")
