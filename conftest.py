"""Every Python example in README.md and docs/ runs as a test (Sybil).

- A ``python`` block runs in its document's namespace, in document order, from the
  repository's root, with its standard output captured. A block that starts with
  ``>>>`` is a doctest.
- A ``text`` block right after a ``python`` block (nothing but blank lines between) is
  what that block prints: it is compared line by line (trailing spaces ignored; ``...``
  matches anything, as doctest's ELLIPSIS does).
- A block that imports ``mesa_llm`` (or calls ``bound_mesa_llm_retries``, which does)
  runs in a fresh interpreter of its own, since importing mesa-llm patches Mesa's
  ``AgentSet`` for the whole process; it must be self-contained.
- ``<!-- invisible-code-block: python -->`` comments hold set-up the reader needs not
  see. Shell commands are ``console`` blocks and are not run.
"""

from __future__ import annotations

import contextlib
import doctest
import io
import os
import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from sybil import Document, Example, Region, Sybil
from sybil.evaluators.doctest import DocTestEvaluator
from sybil.parsers.abstract.doctest import DocTestStringParser
from sybil.parsers.markdown.lexers import DirectiveInHTMLCommentLexer, FencedCodeBlockLexer

# The chaos LLM server fixture (chaos_llm_server) and its chaos_server marker, for the
# tests and for the documented examples that use them.
pytest_plugins = ["fault_injection.pytest_plugin"]

ROOT = Path(__file__).resolve().parent
PRINTED = "__printed__"
# litellm fetches a model cost map from the internet at import unless told not to.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
# Importing mesa_llm (bound_mesa_llm_retries does) patches Mesa for the whole process.
_IMPORTS_MESA_LLM = re.compile(r"^\s*(from|import)\s+mesa_llm\b|bound_mesa_llm_retries\(", re.M)


def _run_python(example: Example) -> None:
    source = "\n" * example.line + example.parsed
    if _IMPORTS_MESA_LLM.search(example.parsed):
        example.namespace[PRINTED] = _run_in_subprocess(example.parsed)
        return
    code = compile(source, example.path, "exec", dont_inherit=True)
    out = io.StringIO()
    with contextlib.chdir(ROOT), contextlib.redirect_stdout(out):
        exec(code, example.namespace)
    example.namespace.pop("__builtins__", None)
    example.namespace[PRINTED] = out.getvalue()


def _run_in_subprocess(source: str) -> str:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, "-c", source],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    if proc.returncode != 0:
        raise AssertionError(f"example exited with status {proc.returncode}:\n{proc.stderr}")
    return proc.stdout


# DOCS_UPDATE_OUTPUT=1 rewrites the output blocks that differ (those without "...")
# with what their examples print, when the session ends: review the diff.
_UPDATES: list[tuple[str, int, int, str]] = []


def _check_output(example: Example) -> str | None:
    printed = example.namespace.get(PRINTED)
    if printed is None:
        return "an output block follows a Python block that did not run"
    want = "\n".join(line.rstrip() for line in example.parsed.strip("\n").splitlines())
    got = "\n".join(line.rstrip() for line in printed.strip("\n").splitlines())
    checker = doctest.OutputChecker()
    if checker.check_output(want + "\n", got + "\n", doctest.ELLIPSIS):
        return None
    if os.environ.get("DOCS_UPDATE_OUTPUT") == "1" and "..." not in want:
        _UPDATES.append((example.path, example.region.start, example.region.end, got))
    example_ = doctest.Example("", want + "\n")
    return checker.output_difference(example_, got + "\n", doctest.ELLIPSIS)


def pytest_sessionfinish() -> None:
    for path, start, end, got in sorted(_UPDATES, reverse=True):  # last first: offsets hold
        text = Path(path).read_text()
        block = text[start:end]
        opening, closing = block.index("\n") + 1, block.rstrip().rindex("\n") + 1
        Path(path).write_text(
            text[:start] + block[:opening] + got + "\n" + block[closing:] + text[end:]
        )


class ExampleParser:
    """Python blocks (run), doctests, and the output blocks that follow Python blocks."""

    def __init__(self) -> None:
        self.lexers = [
            FencedCodeBlockLexer(
                language=r".+", mapping={"language": "language", "source": "source"}
            ),
            DirectiveInHTMLCommentLexer(directive=r"invisible-code-block", arguments=".+"),
        ]
        self.doctests = DocTestStringParser(DocTestEvaluator(doctest.ELLIPSIS))

    def __call__(self, document: Document) -> Iterable[Region]:
        lexed = sorted(
            (region for lexer in self.lexers for region in lexer(document)),
            key=lambda region: region.start,
        )
        last_python_end = None
        for region in lexed:
            language = region.lexemes.get("language") or region.lexemes.get("arguments") or ""
            language = language.strip()
            source = region.lexemes["source"]
            if language == "python":
                last_python_end = region.end
                if source.startswith(">>>"):
                    for doctest_region in self.doctests(source, document.path):
                        doctest_region.adjust(region, source)
                        yield doctest_region
                    last_python_end = None
                    continue
                region.parsed = source
                region.evaluator = _run_python
                yield region
            elif language == "text" and last_python_end is not None:
                between = document.text[last_python_end : region.start]
                if not between.strip():
                    region.parsed = source
                    region.evaluator = _check_output
                    yield region
                last_python_end = None
            else:
                last_python_end = None


def _as_a_script(namespace: dict[str, object]) -> None:
    # A page's examples run as the body of a script would: `if __name__ == "__main__":`
    # (which a sweep's worker processes need) holds.
    namespace["__name__"] = "__main__"


pytest_collect_file = Sybil(
    parsers=[ExampleParser()],
    setup=_as_a_script,
    patterns=["README.md", "docs/*.md", "docs/**/*.md"],
    excludes=["docs/_build/*"],
).pytest()
