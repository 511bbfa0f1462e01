"""The entropy coders' threads: one bounded pool shared by every caller (see "Threads" in :mod:`.lanes`)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

_T = TypeVar("_T")


def _default_threads() -> int:
    env = os.environ.get("HPCM_ENTROPY_THREADS")
    if env:
        try:
            return max(1, min(int(env), 64))
        except ValueError:
            pass
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    # half the CPUs: the model runs beside the coder (on 2 CPUs, 1 thread: see the module docstring)
    return max(1, min(cpus // 2, 8))


_threads = _default_threads()
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_MIN_SYMBOLS_PER_THREAD = 8192  # below this a thread hand-off costs more than it saves


def get_threads() -> int:
    """How many threads the coders use at most (the calling thread included)."""
    return _threads


def set_threads(n: int) -> None:
    """Bound the coding threads (the calling thread included) for every later call; 1 disables the pool."""
    global _threads, _pool
    n = int(n)
    if not 1 <= n <= 64:
        raise ValueError(f"entropy coding threads must be in 1 ... 64, not {n}")
    with _pool_lock:
        if _pool is not None:
            _pool.shutdown(wait=False)
            _pool = None
        _threads = n


def _run(tasks: list[Callable[[], _T]]) -> list[_T]:
    """Run ``tasks``: the first on the calling thread, the others on the shared pool."""
    global _pool
    if len(tasks) == 1:
        return [tasks[0]()]
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=max(1, _threads - 1), thread_name_prefix="hpcm-rans")
        pool = _pool
    try:
        futures = [pool.submit(t) for t in tasks[1:]]
    except RuntimeError:  # the pool was replaced by set_threads meanwhile: run inline
        return [t() for t in tasks]
    first = tasks[0]()
    return [first, *(f.result() for f in futures)]


def _parallelism(symbols: int, units: int) -> int:
    return max(1, min(_threads, units, symbols // _MIN_SYMBOLS_PER_THREAD))
