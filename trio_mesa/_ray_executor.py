"""`RayExecutor`: a ``concurrent.futures.Executor`` over Ray tasks (Ray has none: ray #29456).

Each ``submit`` is one Ray task (``ray.remote`` of a module-level trampoline) whose
``ObjectRef.future()`` is the ``concurrent.futures.Future`` handed back, so anything that
takes an executor (`trio_mesa.sweep`, Mesa 4's ``run_scenarios``) runs on Ray unchanged.
Ray is imported when a `RayExecutor` is made, never before.
"""

from __future__ import annotations

import concurrent.futures as cf
import signal
import threading
from collections.abc import Callable
from typing import Any

from ._checks import check_count

__all__ = ["RayExecutor"]


def _call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return fn(*args, **kwargs)


class RayExecutor(cf.Executor):
    """Runs each submitted call as a Ray task; ``shutdown`` waits for them.

    Args:
        max_workers: how many calls a caller should keep in flight (``_max_workers``,
            which `trio_mesa.sweep` reads); default: the cluster's CPUs. Ray itself
            schedules by ``num_cpus``, not by this number.
        num_cpus: CPUs each task reserves (default 1).
        max_retries: how many times Ray runs a task again when its worker process dies
            (default 0: a run whose process died is reported, not silently run again,
            which would repeat its LLM calls; Ray's own default is 3).
        **init: passed to ``ray.init()`` when Ray is not initialized yet (e.g.
            ``num_cpus=2, include_dashboard=False``); then `shutdown` shuts Ray down too.

    ``ray.init()`` replaces the driver's SIGTERM handler with one that raises
    ``SystemExit`` (so a terminated driver unwinds and shuts Ray down), and
    ``ray.shutdown()`` does not put the old one back (measured with Ray 2.60). A
    `RayExecutor` that initialized Ray puts back the handler it found, in `shutdown`.
    Tasks run in Ray's worker processes: the callable and its arguments must be
    importable there (Ray workers get the driver's environment, ``PYTHONPATH``
    included, but not its ``sys.path`` changes).

    Raises:
        ImportError: Ray is not installed (``pip install 'trio-mesa[ray]'``).
    """

    def __init__(
        self,
        max_workers: int | None = None,
        *,
        num_cpus: float = 1,
        max_retries: int = 0,
        **init: Any,
    ) -> None:
        try:
            import ray
        except ImportError:
            raise ImportError(
                "trio_mesa.RayExecutor needs Ray: pip install 'trio-mesa[ray]'"
            ) from None
        check_count("RayExecutor(): max_retries", max_retries, minimum=0)
        self._ray = ray
        self._started_ray = False
        self._sigterm: Any = None
        if not ray.is_initialized():
            main = threading.current_thread() is threading.main_thread()
            self._sigterm = signal.getsignal(signal.SIGTERM) if main else None
            ray.init(**init)
            self._started_ray = True
        if max_workers is None:
            max_workers = max(1, int(ray.cluster_resources().get("CPU", 1) // max(num_cpus, 1)))
        self._max_workers = check_count("RayExecutor(): max_workers", max_workers)
        self._remote = ray.remote(num_cpus=num_cpus, max_retries=max_retries)(_call)
        self._lock = threading.Lock()
        self._shutdown = False
        self._refs: dict[Any, None] = {}  # in flight, in submission order

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        """Start ``fn(*args, **kwargs)`` as a Ray task; its future."""
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            ref = self._remote.remote(fn, args, kwargs)
            self._refs[ref] = None
        future: cf.Future[Any] = ref.future()
        future.add_done_callback(lambda _: self._forget(ref))
        return future

    def _forget(self, ref: Any) -> None:
        with self._lock:
            self._refs.pop(ref, None)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more submissions; cancel tasks not finished (``cancel_futures``); wait for
        the rest (``wait``); then shut Ray down if this executor started it."""
        with self._lock:
            self._shutdown = True
            refs = list(self._refs)
        ray = self._ray
        if cancel_futures:
            for ref in refs:
                ray.cancel(ref, force=False)
        if wait and refs:
            ray.wait(refs, num_returns=len(refs))
        if self._started_ray:
            self._started_ray = False
            ray.shutdown()
            if self._sigterm is not None:
                signal.signal(signal.SIGTERM, self._sigterm)
