"""Sphinx helpers for trio-mesa's API reference.

- Fail the build when a public name has no entry: every name in the ``__all__`` of
  `trio_mesa`, `trio_mesa.compat`, `fault_injection` and `fault_injection.chaos` must
  be documented (a name `fault_injection` re-exports from `fault_injection.chaos` may
  be documented there).
- Resolve the short cross-references the docstrings use (`StepReport` written in a
  `fault_injection` docstring) to the one public name they can mean; show a private
  name of ours (`MAX_EVENTS`) as code. Any other unresolved reference fails the build.
- Read a property's docstring as prose: napoleon would take the text before a colon
  on its first line for a type.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from typing import Any

from docutils import nodes
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.ext.napoleon.docstring import GoogleDocstring
from sphinx.util import logging

PACKAGES = ("trio_mesa", "trio_mesa.compat", "fault_injection", "fault_injection.chaos")

logger = logging.getLogger(__name__)


def missing_names(documented: set[str]) -> list[str]:
    """The public names (``package.name``) with no entry among ``documented``."""
    missing = []
    for package in PACKAGES:
        module = importlib.import_module(package)
        for name in module.__all__:
            home = getattr(getattr(module, name), "__module__", package)
            homes = {f"{package}.{name}", f"{home}.{name}"}
            homes |= {f"{p}.{name}" for p in PACKAGES if p.startswith(package + ".")}
            if not homes & documented:
                missing.append(f"{package}.{name}")
    return missing


def check_public_names(app: Sphinx, env: BuildEnvironment) -> None:
    for name in missing_names(set(env.domains["py"].objects)):
        logger.warning("public name %s has no entry in the API reference", name)


def resolve_short_name(
    app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: nodes.Element
) -> nodes.Element | None:
    """Resolve `Name` or `Name.attr` to the one public object of ours it can mean."""
    if node.get("refdomain") != "py" or node.get("reftarget", "").startswith(PACKAGES):
        return None
    target = node["reftarget"].lstrip("~.")
    objects = env.domains["py"].objects
    found = [f"{p}.{target}" for p in PACKAGES if f"{p}.{target}" in objects]
    if not found:
        if target.split(".")[0] in _private_names():
            return contnode  # a private name of ours: shown as code, not a dangling link
        return _own_attribute(node, target, contnode)
    node = node.deepcopy()
    node["reftarget"] = found[0]
    node["refspecific"] = False
    return env.domains["py"].resolve_xref(
        env, node["refdoc"], app.builder, node["reftype"], found[0], node, contnode
    ) or env.domains["py"].resolve_xref(
        env, node["refdoc"], app.builder, "obj", found[0], node, contnode
    )


@functools.cache
def _private_names() -> frozenset[str]:
    """Every module-level name of our private modules (``trio_mesa._breaker``'s
    ``MAX_EVENTS``, say): a docstring may mention one; a typo is in none of them."""
    names: set[str] = set()
    for package in ("trio_mesa", "fault_injection"):
        path = importlib.import_module(package).__path__
        for info in pkgutil.walk_packages(path, package + "."):
            if "._" in info.name and not info.name.endswith(".__main__"):
                try:
                    names |= set(vars(importlib.import_module(info.name)))
                except Exception:  # an optional dependency missing: its names are not ours
                    continue
    return frozenset(names)


def _own_attribute(node: pending_xref, target: str, contnode: nodes.Element) -> Any:
    """`field` in a docstring of ours naming an attribute of its own class (a dataclass
    field documented by a ``#:`` comment in a private module, which autodoc cannot
    see there): shown as code, not a dangling reference."""
    module, owner = node.get("py:module") or "", node.get("py:class") or ""
    if not owner or not module.startswith(PACKAGES) or not target.isidentifier():
        return None
    try:
        cls: Any = importlib.import_module(module)
        for part in owner.split("."):
            cls = getattr(cls, part)
    except (ImportError, AttributeError):
        return None
    fields = getattr(cls, "__dataclass_fields__", {})
    return contnode if target in fields else None


def _parse_attribute_docstring(self: GoogleDocstring) -> list[str]:
    return type(self)(self._consume_to_end(), self._config).lines()


def setup(app: Sphinx) -> dict[str, Any]:
    GoogleDocstring._parse_attribute_docstring = _parse_attribute_docstring  # type: ignore[method-assign]
    app.connect("env-check-consistency", check_public_names)
    app.connect("missing-reference", resolve_short_name)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
