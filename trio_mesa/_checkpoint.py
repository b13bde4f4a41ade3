"""The run directory of ``simulate(checkpoint=DIR)``: what a killed run resumes from.

A run directory holds four kinds of file, each written so that a process killed at any
instant (SIGKILL, power loss) leaves it loadable:

* ``manifest.json``: what the run is (steps requested, budget, policy, the versions of
  trio-mesa, Mesa and Python, the model's class) and the snapshots that are good, each
  with its SHA-256 digest. Rewritten whole, atomically (temporary file, fsync, rename,
  fsync of the directory), after each snapshot.
* ``snapshot-00000007.pkl``: the model (cloudpickle: stdlib pickle fails on an ordinary
  Mesa model with a lambda ``DataCollector`` reporter) after step 7, with each agent's
  call count in the cassette. Written atomically before the manifest names it; the last
  ``keep`` are kept, older ones are deleted only after the manifest that drops them is
  on disk. A snapshot file the manifest does not name is ignored.
* ``ledger.jsonl``: one JSON line per finished model step, appended, flushed and fsynced
  when the step ends: its reports in portable form (`trio_mesa._portable`) and usage.
  A last line cut short is a step that did not finish.
* ``cassette.jsonl``: the run's LLM requests (`trio_mesa.use_cassette` in
  ``new_episodes`` mode), each written as it is answered: a step redone after a resume
  gets the answers the killed step already paid for.

Snapshots are pickles, and loading one runs code: a run directory is trusted like code.
A snapshot whose digest differs from the manifest's is refused, never loaded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import pickle
import platform
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._budget import Budget
from ._run_report import ModelStep, model_step_from_json, model_step_to_json, resume_hint
from ._text import safe_repr

FORMAT = "trio-mesa-run"
VERSION = 1
MANIFEST = "manifest.json"
LEDGER = "ledger.jsonl"
CASSETTE = "cassette.jsonl"
SETTINGS = "settings.pkl"
#: How many snapshots a run keeps unless told otherwise.
DEFAULT_KEEP = 2


class CheckpointError(ValueError):
    """A run directory that cannot be used: a path that is a file, unwritable or holding
    another run; a manifest, ledger or snapshot that is truncated, edited or of another
    version; a resume that does not fit the run. ``path`` and ``reason`` say which."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        super().__init__(f"{os.fspath(path)}: {reason}")
        self.path = Path(path)
        self.reason = reason


# -- atomic files ----------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: a killed process leaves the old file or the new."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


# -- what cannot be pickled ------------------------------------------------------------


def _dumps(value: Any, *, plain: bool = True) -> bytes:
    """cloudpickle's pickle of ``value``, made by stdlib pickle when that gives the same
    (``plain``, see `plain_dumps`)."""
    import cloudpickle

    data = plain_dumps(value) if plain else None
    return data if data is not None else cloudpickle.dumps(value, protocol=5)


def plain_dumps(value: Any) -> bytes | None:
    """Stdlib pickle's bytes for ``value`` when they mean what cloudpickle's would, else
    ``None``. Stdlib pickle is C (about 3x faster than cloudpickle on a 1,000-agent
    model) and saves importable classes and functions by reference, as cloudpickle does;
    cloudpickle is needed for what stdlib pickle refuses (a lambda, a local class) or
    would save as a reference into ``__main__`` (which a resume from another script
    could not load), and for modules registered with
    ``cloudpickle.register_pickle_by_value``. A ``__main__`` in the bytes by chance
    only costs the cloudpickle pass."""
    import cloudpickle

    if cloudpickle.cloudpickle._PICKLE_BY_VALUE_MODULES:
        return None
    try:
        data = pickle.dumps(value, protocol=5)
    except Exception:
        return None
    return None if b"__main__" in data else data


_LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()))


def _fresh_lock(reentrant: bool) -> Any:
    return threading.RLock() if reentrant else threading.Lock()


def settings_dumps(value: Any) -> bytes:
    """The run's policy and options, by cloudpickle, with each lock (a `CircuitBreaker`'s,
    a `RateLimit`'s) saved as a fresh lock, as a sweep sends them to its workers: a
    resume starts them as the run started them."""
    import cloudpickle

    class SettingsPickler(cloudpickle.Pickler):  # type: ignore[misc]
        def reducer_override(self, obj: Any) -> Any:
            if type(obj) in _LOCK_TYPES:
                return (_fresh_lock, (type(obj) is _LOCK_TYPES[1],))
            return super().reducer_override(obj)

    buffer = io.BytesIO()
    SettingsPickler(buffer, protocol=5).dump(value)
    return buffer.getvalue()


def _children(value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield f"[{safe_repr(key, limit=60)}]", item
    elif isinstance(value, (list, tuple, set, frozenset)):
        for i, item in enumerate(value):
            yield f"[{i}]", item
    elif hasattr(value, "__self__") and hasattr(value, "__func__"):
        yield ".__self__", value.__self__  # a bound method pickles its object
    else:
        # What pickle itself would save (a class's own __getstate__ may leave out
        # what its __dict__ holds), as a dict, or (dict, slots) for __slots__ classes.
        try:
            state = value.__getstate__()
        except Exception:
            return
        parts = state if isinstance(state, tuple) else (state,)
        for part in parts:
            if isinstance(part, dict):
                for name, item in part.items():
                    yield f".{name}", item
        if not any(isinstance(part, dict) for part in parts):  # a slots dataclass's list
            for cls in type(value).__mro__:
                for name in getattr(cls, "__slots__", ()):
                    if hasattr(value, name):
                        yield f".{name}", getattr(value, name)


def unpicklable_part(
    value: Any, where: str = "model", depth: int = 8, seen: set[int] | None = None
) -> str | None:
    """The path (``model.client._lock``) of the deepest part of ``value`` that does not
    pickle, with its type and the error; ``None`` when ``value`` pickles. Each object is
    looked into once, by the first path that reaches it (so a part of the model is
    named from the model, not through a reference back to it)."""
    try:
        _dumps(value)
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    else:
        return None
    root = seen is None
    seen = {id(value)} if seen is None else seen
    if depth > 0:
        every = list(_children(value))
        children = [(name, item) for name, item in every if id(item) not in seen]
        seen.update(id(item) for _, item in children)
        for name, item in children:
            found = unpicklable_part(item, where + name, depth - 1, seen)
            if found is not None:
                return found
        if every and not root:
            return None  # it fails through a part already looked into (named from there)
    return f"{where} ({type(value).__name__}): {error}"


# -- the directory ---------------------------------------------------------------------


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name, dist in (("trio_mesa", "trio-mesa"), ("mesa", "mesa")):
        try:
            found[name] = version(dist)
        except PackageNotFoundError:  # as trio_mesa.__version__ (a source tree)
            found[name] = "0+unknown"
    return {**found, "python": platform.python_version()}


def class_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _budget_doc(budget: Budget | None) -> dict[str, Any] | None:
    return None if budget is None else dataclasses.asdict(budget)


def snapshot_name(step: int) -> str:
    return f"snapshot-{step:08d}.pkl"


class RunDirectory:
    """One run directory, open for writing (`create`) or for a resume (`open`)."""

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = path
        self.manifest = manifest
        self.plain = True  # snapshots try stdlib pickle first (`plain_dumps`)

    # -- creating -----------------------------------------------------------------

    @classmethod
    def create(
        cls,
        where: str,
        directory: Any,
        model: Any,
        *,
        steps: int,
        budget: Budget | None,
        policy: Any,
        options: dict[str, Any],
        every: int,
        keep: int,
    ) -> RunDirectory:
        """Check ``directory`` and ``model``, then write the manifest and the snapshot of
        step 0 (the model as given). Everything is refused here, before step 1.

        Raises:
            CheckpointError: ``directory`` is a file, holds another run or other files,
                or cannot be written; ``model`` does not pickle (naming the attribute).
        """
        if not isinstance(directory, (str, os.PathLike)):
            raise TypeError(f"{where}: checkpoint must be a directory path, not {directory!r:.200}")
        path = Path(directory)
        _refuse_used(where, path)
        found = unpicklable_part(model)
        if found is not None:
            raise CheckpointError(
                path,
                f"{where}: the model cannot be snapshotted (cloudpickle): {found}; make "
                "that attribute picklable (or rebuild it in __setstate__), or run "
                "without checkpoint=",
            )
        try:
            path.mkdir(parents=True, exist_ok=True)
            settings = settings_error = None
            try:
                settings = settings_dumps({"policy": policy, "options": options})
            except Exception:
                settings_error = unpicklable_part({"policy": policy, "options": options}, "")
            if settings is not None:
                write_atomic(path / SETTINGS, settings)
            manifest: dict[str, Any] = {
                "format": FORMAT,
                "version": VERSION,
                **_versions(),
                "model_class": class_name(type(model)),
                "steps": steps,
                "every": every,
                "keep": keep,
                "budget": _budget_doc(budget),
                "policy": safe_repr(policy, limit=2000),
                "options": {k: safe_repr(v, limit=200) for k, v in options.items()},
                "settings": None if settings is None else hashlib.sha256(settings).hexdigest(),
                "settings_error": settings_error,
                "snapshots": [],
                "resumes": [],
            }
            self = cls(path, manifest)
            (path / LEDGER).touch()
            self.snapshot(0, model, {})
        except OSError as exc:
            raise CheckpointError(path, f"{where}: cannot write the run directory: {exc}") from None
        return self

    # -- opening --------------------------------------------------------------------

    @classmethod
    def open(cls, where: str, directory: Any) -> RunDirectory:
        """Read and check the manifest of the run kept in ``directory``.

        Raises:
            CheckpointError: no run there, a manifest that is not one (naming the
                field), or one written by another format or trio-mesa version.
        """
        if not isinstance(directory, (str, os.PathLike)):
            raise TypeError(f"{where}: expected a run directory path, not {directory!r:.200}")
        path = Path(directory)
        file = path / MANIFEST
        if not path.is_dir():
            raise CheckpointError(path, f"{where}: not a directory")
        try:
            manifest = json.loads(file.read_bytes())
        except FileNotFoundError:
            raise CheckpointError(
                file, f"{where}: no manifest: not a run directory (or the run never started)"
            ) from None
        except (OSError, ValueError) as exc:
            raise CheckpointError(file, f"{where}: unreadable manifest ({exc})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise CheckpointError(file, f"{where}: not a {FORMAT} manifest")
        if manifest.get("version") != VERSION:
            raise CheckpointError(
                file,
                f"{where}: run directory format {manifest.get('version')!r}, "
                f"this trio-mesa reads {VERSION}",
            )
        version = _versions()["trio_mesa"]
        if manifest.get("trio_mesa") != version:
            raise CheckpointError(
                file,
                f"{where}: the run was made by trio-mesa {manifest.get('trio_mesa')!r}, "
                f"this is {version!r}; resume it with that version",
            )
        for name, kind in (("steps", int), ("snapshots", list), ("model_class", str)):
            if not isinstance(manifest.get(name), kind):
                raise CheckpointError(file, f"{where}: field {name!r} missing or malformed")
        return cls(path, manifest)

    def settings(self) -> dict[str, Any] | None:
        """The policy and options the run was started with, or ``None`` (not picklable)."""
        digest = self.manifest.get("settings")
        if digest is None:
            return None
        data = self._checked(self.path / SETTINGS, digest)
        import cloudpickle

        return cloudpickle.loads(data)  # type: ignore[no-any-return]

    def _checked(self, file: Path, digest: str) -> bytes:
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise CheckpointError(file, f"cannot read: {exc.strerror}") from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise CheckpointError(
                file,
                f"digest {actual[:16]}... differs from the manifest's {digest[:16]}...: the "
                "file was edited or damaged; refusing to load it (a snapshot is a pickle, "
                "and loading one runs code)",
            )
        return data

    def newest_snapshot(self) -> tuple[int, Any, dict[Any, int]]:
        """The newest snapshot the manifest names: (step, model, cassette call counts).

        Raises:
            CheckpointError: its file is missing, its digest differs, it does not load,
                or it holds a model of another class than the manifest's.
        """
        entries = self.manifest["snapshots"]
        if not entries:
            raise CheckpointError(self.path / MANIFEST, "the manifest names no snapshot")
        step, name, digest = entries[-1]
        file = self.path / name
        data = self._checked(file, digest)
        import cloudpickle

        try:
            state = cloudpickle.loads(data)
            model, calls, saved = state["model"], state["calls"], state["step"]
        except Exception as exc:
            raise CheckpointError(file, f"does not load: {type(exc).__name__}: {exc}") from None
        if saved != step:
            raise CheckpointError(file, f"holds step {saved}, the manifest says {step}")
        found = class_name(type(model))
        if found != self.manifest["model_class"]:
            raise CheckpointError(
                file,
                f"holds a model of class {found}, the run's is {self.manifest['model_class']}",
            )
        return step, model, calls

    def ledger_steps(self, upto: int) -> list[ModelStep]:
        """The ledger's steps 1..``upto`` (a resume redoes any after them).

        A last line cut short (no newline, or not JSON) is a step that did not finish.

        Raises:
            CheckpointError: a damaged line before the last, steps out of order, or
                fewer than ``upto`` steps (naming the file and line).
        """
        file = self.path / LEDGER
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise CheckpointError(file, f"cannot read: {exc.strerror}") from None
        lines = data.split(b"\n")
        lines.pop()  # after the last newline: "" or a line cut short
        steps: list[ModelStep] = []
        for n, raw in enumerate(lines, 1):
            if len(steps) == upto:
                break
            try:
                step = model_step_from_json(json.loads(raw))
            except (ValueError, KeyError, TypeError, IndexError) as exc:
                raise CheckpointError(
                    file, f"line {n}: not a ledger line ({type(exc).__name__}: {exc})"
                ) from None
            if step.step != n:
                raise CheckpointError(file, f"line {n}: holds step {step.step}, expected {n}")
            steps.append(step)
        if len(steps) < upto:
            raise CheckpointError(
                file,
                f"has {len(steps)} finished steps, but the newest snapshot is of step {upto}",
            )
        return steps

    # -- writing --------------------------------------------------------------------

    def record_step(self, step: ModelStep, stopped_because: str | None) -> None:
        """Append ``step``'s ledger line; flushed and fsynced before this returns."""
        doc = model_step_to_json(step)
        doc["usage"] = step.usage.to_dict()
        if stopped_because is not None:
            doc["stopped_because"] = stopped_because
        line = json.dumps(doc, separators=(",", ":"), default=str).encode() + b"\n"
        with open(self.path / LEDGER, "ab") as file:
            file.write(line)
            file.flush()
            os.fsync(file.fileno())

    def keep_ledger(self, upto: int) -> None:
        """Drop the ledger lines after step ``upto`` (steps a resume redoes), atomically."""
        file = self.path / LEDGER
        data = file.read_bytes()
        lines = data.split(b"\n")
        if len(lines) == upto + 1 and lines[-1] == b"":
            return
        write_atomic(file, b"".join(line + b"\n" for line in lines[:upto]))

    def snapshot(self, step: int, model: Any, calls: dict[Any, int]) -> int:
        """Write the snapshot of ``step``, then the manifest naming it, then delete the
        snapshots beyond ``keep``. Returns its size in bytes."""
        state = {"step": step, "model": model, "calls": calls}
        data = plain_dumps(state) if self.plain else None
        if data is None:
            self.plain = False  # the model needs cloudpickle: do not try stdlib again
            data = _dumps(state, plain=False)
        name = snapshot_name(step)
        write_atomic(self.path / name, data)
        entries = [e for e in self.manifest["snapshots"] if e[0] != step]
        entries.append([step, name, hashlib.sha256(data).hexdigest()])
        keep = int(self.manifest.get("keep", DEFAULT_KEEP))
        dropped, entries = entries[:-keep], entries[-keep:]
        self.manifest["snapshots"] = entries
        self.write_manifest()
        for _, old, _ in dropped:
            with contextlib.suppress(FileNotFoundError):
                (self.path / old).unlink()
        return len(data)

    def write_manifest(self) -> None:
        write_atomic(self.path / MANIFEST, json.dumps(self.manifest, indent=1).encode() + b"\n")

    @property
    def cassette(self) -> Path:
        return self.path / CASSETTE


def _refuse_used(where: str, path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise CheckpointError(path, f"{where}: checkpoint must be a directory; this is a file")
    if not path.is_dir():
        parent = path.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not os.access(parent, os.W_OK | os.X_OK):
            raise CheckpointError(path, f"{where}: cannot create it: {parent} is not writable")
        return
    if not os.access(path, os.W_OK | os.X_OK):
        raise CheckpointError(path, f"{where}: the directory is not writable")
    manifest = path / MANIFEST
    if manifest.exists():
        what = "a run"
        with contextlib.suppress(Exception):
            doc = json.loads(manifest.read_bytes())
            what = f"a run of {doc['model_class']} ({doc['steps']} steps)"
        raise CheckpointError(
            path,
            f"{where}: the directory holds {what}; resume it with "
            f"trio_mesa.resume({os.fspath(path)!r}), or choose a new or empty directory",
        )
    others = sorted(p.name for p in path.iterdir())
    if others:
        raise CheckpointError(
            path,
            f"{where}: the directory is not empty ({', '.join(others[:3])}"
            f"{', ...' if len(others) > 3 else ''}); choose a new or empty directory",
        )


class Durability:
    """A run's run directory at work: it seeds a resumed `Run` and, after each finished
    step, writes the ledger line and (every ``every`` steps, the last and a stopped
    run's) the snapshot. `after_step` runs in a worker thread between model steps,
    while nothing touches the model."""

    def __init__(
        self,
        directory: RunDirectory,
        *,
        prior: tuple[ModelStep, ...] = (),
        calls: dict[Any, int] | None = None,
        resumed_after: tuple[int, ...] = (),
    ) -> None:
        self.directory = directory
        self.every = int(directory.manifest.get("every", 1))
        self.prior = prior
        self.calls = calls or {}
        self.resumed_after = resumed_after
        self.recording: Any = None
        self.run: Any = None
        #: (step, bytes, seconds) of each snapshot written by this process.
        self.snapshots: list[tuple[int, int, float]] = []

    @classmethod
    def start(
        cls,
        where: str,
        directory: Any,
        model: Any,
        *,
        steps: int,
        budget: Budget | None,
        policy: Any,
        options: dict[str, Any],
        every: int,
        keep: int,
    ) -> Durability:
        created = RunDirectory.create(
            where,
            directory,
            model,
            steps=steps,
            budget=budget,
            policy=policy,
            options=options,
            every=every,
            keep=keep,
        )
        return cls(created)

    @property
    def cassette(self) -> Path:
        return self.directory.cassette

    def attach(self, run: Any, recording: Any) -> None:
        """Give ``run`` its directory: the steps already done, the after-step writes."""
        from ._usage import sum_usage

        self.run = run
        self.recording = recording
        if recording is not None and self.calls:
            recording.continue_counts(self.calls)
        run.checkpoint = os.fspath(self.directory.path)
        run.after_step = self.after_step
        run.resumed_after = self.resumed_after
        if not self.prior:
            return
        prior = self.prior
        run.finished.extend(prior)
        run.first_step = prior[-1].step + 1
        run.prior_duration = sum(s.duration for s in prior)
        run.usage_done = sum_usage(s.usage for s in prior)
        run.agent_steps = sum(len(r) for s in prior for r in s.reports)
        run.lost = sum(s.lost for s in prior)
        budget = run.budget
        if budget is not None:
            why = budget.usage_crossed(run.usage_done) or budget.lost_crossed(
                run.lost, run.agent_steps
            )
            if why is not None:
                run.stopped_because = f"{why} before step {run.first_step} (resumed)"

    def after_step(self) -> None:
        import time

        run = self.run
        step = run.finished[-1]
        if self.recording is not None:
            self.recording.sync()  # the answers before the ledger line that needs them
        self.directory.record_step(step, run.stopped_because)
        if (
            step.step % self.every == 0
            or step.step >= run.requested
            or run.stopped_because is not None
        ):
            calls = self.recording.call_counts() if self.recording is not None else {}
            started = time.perf_counter()
            size = self.directory.snapshot(step.step, run.model, calls)
            self.snapshots.append((step.step, size, time.perf_counter() - started))

    def note(self, exc: BaseException) -> None:
        """Add a PEP 678 note to what ended the run: where it is kept, how to resume."""
        entries = self.directory.manifest["snapshots"]
        last = entries[-1][0] if entries else 0
        where = os.fspath(self.directory.path)
        done = f"step {last} is its newest snapshot" if last else "no step finished"
        exc.add_note(f"trio-mesa: the run is kept in {where} ({done}); {resume_hint(where)}")


__all__ = ["CheckpointError", "Durability", "RunDirectory", "unpicklable_part", "write_atomic"]
