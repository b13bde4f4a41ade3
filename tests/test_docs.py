"""The README stays a five-minute read; the docs hold the rest."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_readme_is_under_10_kb() -> None:
    size = len((ROOT / "README.md").read_bytes())
    assert size < 10_000, f"README.md is {size} bytes: move detail into docs/"


def test_every_docs_page_the_readme_links_to_exists() -> None:
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(((?:docs/|CONTRIBUTING)[^)#]*)", readme)
    assert links, "the README links to the docs"
    missing = [link for link in links if not (ROOT / link).exists()]
    assert not missing, missing
