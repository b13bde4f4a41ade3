"""`Recording`: a cassette in use by a run, with VCR.py's record modes made exact for agents.

`use_cassette` opens one (checking the file first, so a missing, truncated or edited
cassette fails before any agent is stepped, naming file, line and field) and makes it
the current one for the code inside its ``with`` block: every step started there
records and replays through the request seam (`trio_mesa._seam`). An exchange is keyed
by (agent ``unique_id``, that agent's call number), numbered here for the whole
recording: the agent's n-th request of the run is call n, whatever order the agents'
requests arrive in. The file is the chaos server's cassette format
(`trio_mesa._cassette`): a cassette recorded by the proxy replays here, and one
recorded here replays in ``python -m fault_injection serve --replay``.
"""

from __future__ import annotations

import contextvars
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ._cassette import Cassette, CassetteError, CassetteWriter, Exchange

#: The record modes, as VCR.py names them.
RECORD_MODES = ("none", "once", "new_episodes", "all")

#: The recording the steps started in this context use (set by `use_cassette`).
current_recording: contextvars.ContextVar[Recording | None] = contextvars.ContextVar(
    "trio_mesa_recording", default=None
)


class Recording:
    """A cassette file in use: what it replays, what it records, each agent's call count.

    Made by `use_cassette` (use it as a context manager, or pass it as ``cassette=`` to
    a step or to `trio_mesa.simulate`). Thread-safe: agents in worker threads and
    asyncio tasks number their calls through one lock.

    Record modes (``record``):

    * ``"none"``: replay only. The file must exist and be complete. A call it has no
      exchange for is refused (the agent's request fails with an HTTP 400 naming the
      agent, the call and the file).
    * ``"once"``: record when the file does not exist yet; replay (as ``"none"``) when
      it does.
    * ``"new_episodes"``: replay the calls the file has, record the ones it has not
      (what resuming a run needs). A file cut short (a crashed run) loads up to the
      damage; the file is rewritten with its old exchanges first, then the new ones.
    * ``"all"``: always record; the file is overwritten.

    A replayed call whose request differs from the recorded one is refused (strict
    divergence checking: the 400 names the first difference), so a replay that
    completes is the recorded run.

    Attributes:
        path: the cassette file (a `Path`); record: the mode; cassette: the recorded
            exchanges being replayed (``None`` when nothing is replayed); recorded and
            replayed: calls written and answered from the file so far.
    """

    def __init__(self, path: str | os.PathLike[str], record: str = "once") -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"cassette must be a file path, not {path!r:.200}")
        if record not in RECORD_MODES:
            raise ValueError(
                f"record must be one of {', '.join(map(repr, RECORD_MODES))}, not {record!r:.80}"
            )
        self.path = Path(path)
        self.record = record
        self.cassette: Cassette | None = None
        self._writer: CassetteWriter | None = None
        self._lock = threading.Lock()
        self._calls: dict[Any, int] = {}
        self.recorded = 0
        self.replayed = 0
        self._users = 0
        self._token: contextvars.Token[Recording | None] | None = None
        exists = self.path.exists()
        if record == "none" or (record == "once" and exists):
            self.cassette = Cassette.load(self.path)
        elif record == "new_episodes" and exists:
            self.cassette = Cassette.load(self.path, complete=False)
            self._writer = _rewrite(self.path, self.cassette)
        else:
            self._writer = CassetteWriter(self.path)

    @property
    def replays(self) -> bool:
        """Whether calls are answered from the file (``none``, ``once`` on an existing
        file, ``new_episodes`` on an existing file)."""
        return self.cassette is not None

    @property
    def records(self) -> bool:
        """Whether calls the file has no exchange for are sent and written."""
        return self._writer is not None

    def next_call(self, agent: Any) -> int:
        """The number of ``agent``'s next call (1 for its first of the recording)."""
        with self._lock:
            n = self._calls.get(agent, 0) + 1
            self._calls[agent] = n
            return n

    def call_counts(self) -> dict[Any, int]:
        """Each agent's calls so far in this recording (a copy)."""
        with self._lock:
            return dict(self._calls)

    def continue_counts(self, counts: dict[Any, int]) -> None:
        """Number the calls on from ``counts`` (a resumed run: the calls made before)."""
        with self._lock:
            self._calls.update(counts)

    def sync(self) -> None:
        """Flush and fsync what was recorded so far (a no-op when not recording)."""
        if self._writer is not None:
            self._writer.sync()

    def lookup(self, agent: Any, call: int) -> Exchange | None:
        """The recorded exchange for ``agent``'s ``call``-th call, or ``None``."""
        if self.cassette is None or not _keyable(agent):
            return None
        return self.cassette.get(agent, call)

    def write(self, exchange: Exchange) -> None:
        """Append ``exchange`` to the file and flush it (a crash loses nothing else)."""
        if self._writer is None:
            raise RuntimeError(f"internal: cassette {self.path} is not recording")
        self._writer.write(exchange)
        with self._lock:
            self.recorded += 1

    def count_replayed(self) -> None:
        with self._lock:
            self.replayed += 1

    def close(self) -> None:
        """Write the end line (when recording) and close the file. Idempotent."""
        if self._writer is not None:
            self._writer.close()

    def __enter__(self) -> Recording:
        self._token = current_recording.set(self)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._token is not None:
            current_recording.reset(self._token)
            self._token = None
        self.close()

    def __repr__(self) -> str:
        return (
            f"<trio_mesa.Recording {str(self.path)!r} record={self.record!r} "
            f"replayed={self.replayed} recorded={self.recorded}>"
        )


def _keyable(agent: Any) -> bool:
    # The cassette format keys agents by integer unique_id (Mesa's are ints).
    return isinstance(agent, int) and not isinstance(agent, bool)


def _rewrite(path: Path, cassette: Cassette) -> CassetteWriter:
    """A writer on ``path`` that holds ``cassette``'s exchanges first. They are written
    to a temporary file beside it, flushed and fsynced, then renamed over it, so a
    crash meanwhile leaves the old file as it was."""
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        writer = CassetteWriter(tmp)
        for exchange in cassette:
            writer.write(exchange)
        writer.sync()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    writer.path = path
    return writer


def use_cassette(path: str | os.PathLike[str], record: str = "once") -> Recording:
    """Record or replay every LLM request the agents make, to or from ``path``.

    ``with trio_mesa.use_cassette("run.jsonl", record="all"): ...`` records every step
    started inside the block (`run_step`, `step_agents`, `aio_step_agents`,
    `simulate`, `trio_mesa.compat`); ``record="none"`` then replays them offline, with
    no server, proxy or ``api_base`` change. Requests are seen where they leave the
    process (`trio_mesa._seam`): litellm's OpenAI-compatible providers, and openai SDK
    clients made with ``http_client=trio_mesa.async_http_client()``. Each exchange is
    keyed by (agent ``unique_id``, that agent's call number in this recording) and
    written and flushed as it is received; the end line is written when the block
    ends. Requests made outside any agent pass through, neither recorded nor replayed.

    The returned `Recording` can also be passed as ``cassette=`` to each step, or
    entered later; entering it twice at once is not supported.

    Args:
        path: the cassette file (JSON lines, `trio_mesa.Cassette`'s format).
        record: ``"none"``, ``"once"`` (default), ``"new_episodes"`` or ``"all"``: see
            `Recording`.

    Raises:
        TypeError, ValueError: a ``path`` that is not a path, an unknown mode.
        CassetteError: (a ValueError) the file cannot be replayed: missing (for
            ``"none"``), truncated, edited or malformed; the message names the file,
            the line and the field. Raised here, before any agent is stepped.
    """
    from ._usage import track_usage

    track_usage()  # the seam learns the agent from its usage ledger
    return Recording(path, record)


@contextmanager
def using_recording(where: str, cassette: Any, record: Any) -> Iterator[Recording | None]:
    """The ``cassette=``/``record=`` arguments of a step or a run, in force for the
    ``with`` block (see `recording_for`); a cassette opened here is closed at its end."""
    recording, owned = recording_for(where, cassette, record)
    if recording is None:
        yield None
        return
    token = current_recording.set(recording)
    try:
        yield recording
    finally:
        current_recording.reset(token)
        if owned:
            recording.close()


def recording_for(where: str, cassette: Any, record: Any) -> tuple[Recording | None, bool]:
    """The `Recording` a step's ``cassette=``/``record=`` arguments ask for, and whether
    the step opened it (and so closes it when it ends). ``cassette=None`` with a
    ``record`` is an error; a `Recording` given with a ``record`` must match its mode."""
    if cassette is None:
        if record is not None:
            raise ValueError(f"{where}: record={record!r:.80} needs cassette=PATH")
        return None, False
    if isinstance(cassette, Recording):
        if record is not None and record != cassette.record:
            raise ValueError(
                f"{where}: record={record!r:.80} differs from the mode the cassette was "
                f"opened with ({cassette.record!r})"
            )
        return cassette, False
    try:
        return use_cassette(cassette, "once" if record is None else record), True
    except CassetteError:
        raise
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{where}: {exc}") from None


__all__ = [
    "RECORD_MODES",
    "Recording",
    "current_recording",
    "recording_for",
    "use_cassette",
    "using_recording",
]
