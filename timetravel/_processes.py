"""Worker processes that never outlive the process that started them.

joblib's loky workers keep computing their current task after their parent is
killed (``kill -9`` gives the parent no chance to stop them), holding hundreds
of megabytes each. :func:`in_worker` runs a task after tying the worker to its
parent: on Linux the kernel sends the worker SIGKILL when the parent dies
(``prctl(PR_SET_PDEATHSIG)``); everywhere, a worker whose parent is already
gone exits before starting the task.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys
from typing import Any, Callable, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")
_PR_SET_PDEATHSIG = 1
_bound_to: int | None = None  # the parent this process is tied to, once done


def bind_to_parent(parent_pid: int) -> None:
    """Make this process die with ``parent_pid`` (a no-op in the parent itself).

    Parameters
    ----------
    parent_pid : int
        Process id of the process that submitted the work. When it is this
        process (threads, sequential backends) nothing is done.
    """
    global _bound_to
    if parent_pid == os.getpid():
        return
    if _bound_to != parent_pid and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
                logger.debug("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
        except OSError as error:  # no libc to load: fall back to the parent check below
            logger.debug("cannot load libc for prctl: %s", error)
    _bound_to = parent_pid
    if os.getppid() != parent_pid:  # the parent died before the kernel could be told
        os._exit(1)


def in_worker(parent_pid: int, task: Callable[..., T], *args: Any) -> T:
    """Run ``task(*args)`` in a worker tied to ``parent_pid`` (see :func:`bind_to_parent`).

    Parameters
    ----------
    parent_pid : int
        ``os.getpid()`` of the submitting process, taken when the job is built.
    task : callable
        A module-level function (picklable by reference).
    *args
        Its arguments.

    Returns
    -------
    object
        What ``task`` returns.
    """
    bind_to_parent(parent_pid)
    return task(*args)
