"""Every public name has an entry in the API reference, and it reprs as the package."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import fault_injection
import fault_injection.chaos
import trio_mesa
import trio_mesa.compat

API = Path(__file__).parent.parent / "docs" / "api"
_MODULE = re.compile(r"^\.\. module:: (\S+)$", re.M)
_ENTRY = re.compile(r"^\.\. (?:auto)?(?:class|function|exception|data):: (\w+)$", re.M)


def _documented() -> dict[str, set[str]]:
    """The names each API page documents, by the module its ``.. module::`` names."""
    documented: dict[str, set[str]] = {}
    for page in sorted(API.glob("*.md")):
        text = page.read_text()
        modules = _MODULE.findall(text)
        if not modules:
            continue
        (module,) = modules
        documented.setdefault(module, set()).update(_ENTRY.findall(text))
    return documented


PACKAGES = [trio_mesa, trio_mesa.compat, fault_injection, fault_injection.chaos]


@pytest.mark.parametrize("package", PACKAGES)
def test_every_public_name_has_an_entry_in_the_api_reference(package) -> None:
    # A name a package re-exports from a public subpackage (fault_injection's chaos
    # server names) is documented once, on the subpackage's page.
    documented = _documented()
    here = documented.get(package.__name__, set())
    below = set().union(
        *(
            names
            for module, names in documented.items()
            if module.startswith(package.__name__ + ".")
        )
    )
    # A name re-exported from another package (fault_injection.chaos's Cassette, from
    # trio_mesa) is documented where it lives.
    elsewhere = {
        name
        for name in package.__all__
        if name in documented.get(getattr(getattr(package, name), "__module__", ""), set())
    }
    missing = set(package.__all__) - here - below - elsewhere
    assert not missing, f"{package.__name__}: no entry in docs/api/ for {sorted(missing)}"
    stale = here - set(package.__all__)
    assert not stale, f"docs/api/ documents {sorted(stale)}, not in {package.__name__}.__all__"
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
