"""The public surface is exactly what README documents, and it reprs as the package."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import fault_injection
import fault_injection.chaos
import trio_mesa
import trio_mesa.compat

README = (Path(__file__).parent.parent / "README.md").read_text()


def _documented(package: str) -> set[str]:
    section = README.split("## Reference: every public name", 1)[1].split("\n## ", 1)[0]
    match = re.search(rf"^- `{re.escape(package)}`: (.*?)\.$", section, re.M | re.S)
    assert match, f"README lists no public names for {package}"
    return set(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", match.group(1)))


PACKAGES = [trio_mesa, trio_mesa.compat, fault_injection, fault_injection.chaos]


@pytest.mark.parametrize("package", PACKAGES)
def test_public_names_are_exactly_what_readme_documents(package) -> None:
    assert set(package.__all__) == _documented(package.__name__)
    for name in package.__all__:
        assert hasattr(package, name), name


@pytest.mark.parametrize("package", PACKAGES)
def test_public_classes_and_functions_repr_as_the_package(package) -> None:
    # A name re-exported from a public subpackage (fault_injection.chaos's, from
    # fault_injection) reprs as the subpackage where it lives: public either way.
    for name in package.__all__:
        obj = getattr(package, name)
        if isinstance(obj, type) or callable(obj):
            home = obj.__module__
            # The cassette names live in trio_mesa (the product); the chaos server's
            # packages re-export them for compatibility.
            reexported = home == "trio_mesa" and package.__name__.startswith("fault_injection")
            assert (
                home == package.__name__
                or (home.startswith(package.__name__ + ".") and "._" not in home)
                or reexported
            ), f"{name}: {home}"
    if package is trio_mesa:
        assert repr(trio_mesa.StepReport) == "<class 'trio_mesa.StepReport'>"


def test_version_comes_from_the_package_metadata() -> None:
    from importlib.metadata import version

    assert trio_mesa.__version__ == version("trio-mesa")
