"""One browser tab's state, shared by its controllers.

A session holds what the user is looking at (the epoch's frame, the inspected sample,
the canvas selection, the review snapshot, how many queue rows are shown, the group
the queue is limited to and the pool on the canvas). The
controllers (:mod:`time_travel`, :mod:`interaction`, :mod:`inspecting`, :mod:`reviewing`,
and any view added later) change it with :meth:`Session.change` and hear about every
change through :meth:`Session.subscribe`: one notification naming everything that
changed together, so each listener updates its views once.

Slow work runs on the run's executor (:meth:`Session.background`); results come back
to the document through ``add_next_tick_callback``, so the event loop never blocks on
disk or on the recommender.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

import numpy as np
from bokeh.document import Document

from timetravel.groups import Group
from timetravel.server_app.data import EpochFrame, RunData
from timetravel.server_app.review import Review, ReviewSnapshot

logger = logging.getLogger(__name__)

# What Session.change can change; listeners receive a frozenset of these names.
FRAME, TARGET, SELECTION, REVIEW = "frame", "target", "selection", "review"
QUEUE_SIZE, SCOPE, POOL = "queue_size", "scope", "pool"
_KEEP = object()


@dataclass(frozen=True)
class PoolMark:
    """The unlabelled pool on the canvas: whether it is drawn, and the pool row chosen in the pool tab."""

    shown: bool = False
    row: int | None = None


class Session:
    """State of one session's document; see the module docstring.

    Parameters
    ----------
    doc : Document
        The session's document.
    data : RunData
        The run (shared by every session of the server).
    review : Review
        The run's review (shared by every session of the server).
    frame : EpochFrame
        The epoch shown first.
    queue_size : int
        How many queue rows are shown (the canvas rings as many).
    """

    def __init__(self, doc: Document, data: RunData, review: Review, frame: EpochFrame, queue_size: int) -> None:
        self.doc, self.data, self.review = doc, data, review
        context = doc.session_context
        self.id = (context.id if context is not None else "local")[:12]
        self.frame = frame
        self.target: int | None = None
        self.selected = np.zeros(0, dtype=np.int64)
        self.snap: ReviewSnapshot = review.snapshot()
        self.queue_size = queue_size
        self.scope: Group | None = None  # when set, the queue recommends only among these samples
        self.pool = PoolMark()
        self.alive = True
        self._listeners: list[Callable[[frozenset[str]], None]] = []
        self._failure_listeners: list[Callable[[str], None]] = []

    # -- state -------------------------------------------------------------------------

    def subscribe(self, listener: Callable[[frozenset[str]], None]) -> None:
        """Call ``listener(changed)`` after every :meth:`change`, in subscription order."""
        self._listeners.append(listener)

    def change(
        self,
        *,
        frame: EpochFrame | Any = _KEEP,
        target: int | None | Any = _KEEP,
        selected: np.ndarray | Any = _KEEP,
        snap: ReviewSnapshot | Any = _KEEP,
        queue_size: int | Any = _KEEP,
        scope: Group | None | Any = _KEEP,
        pool: PoolMark | Any = _KEEP,
    ) -> None:
        """Change the given parts of the state, then tell every listener what changed.

        Raises
        ------
        IndexError
            ``target`` is not a sample of the run.
        """
        changed = set()
        if frame is not _KEEP:
            self.frame = frame
            changed.add(FRAME)
        if target is not _KEEP:
            self.target = None if target is None else self.data.check_index(target)
            changed.add(TARGET)
        if selected is not _KEEP:
            self.selected = np.asarray(selected, dtype=np.int64)
            changed.add(SELECTION)
        if snap is not _KEEP:
            self.snap = snap
            changed.add(REVIEW)
        if queue_size is not _KEEP:
            self.queue_size = int(queue_size)
            changed.add(QUEUE_SIZE)
        if scope is not _KEEP:
            self.scope = scope
            changed.add(SCOPE)
        if pool is not _KEEP:
            self.pool = pool
            changed.add(POOL)
        changed = frozenset(changed)
        for listener in self._listeners:
            try:
                listener(changed)
            except Exception as exc:  # one view failing must not stop the others, nor fail silently
                logger.exception("updating a view after a change of %s failed", sorted(changed))
                self._failed(f"Part of the page could not be updated: {exc} (the server log has the details)", None)

    def inspect(self, sample: int | None) -> None:
        """Show ``sample`` in the inspector (None clears it); decisions apply to it."""
        self.change(target=sample)

    def shown_queue(self) -> list[int]:
        """The queue rows on show (the first ``queue_size`` recommendations, by p(accept))."""
        return self.snap.shown(self.queue_size)

    # -- the event loop and the executor ------------------------------------------------

    def later(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` on the document's event loop (from any thread)."""
        if self.alive:
            self.doc.add_next_tick_callback(partial(fn, *args))

    def background(
        self,
        work: Callable[[], Any],
        done: Callable[[Any], None],
        what: str,
        *,
        failed: Callable[[], None] | None = None,
    ) -> None:
        """Run ``work`` on the executor, then ``done(result)`` on the event loop.

        A failure is logged with its traceback and reported as "WHAT failed: ..." to the
        failure listeners; ``failed()`` then runs on the event loop (to reset a busy flag).
        """

        def finished(future: Future) -> None:
            if future.cancelled():  # the server is shutting down: nobody waits for the result
                return
            exc = future.exception()
            if exc is not None:
                logger.error("%s failed", what, exc_info=exc)
                self.later(self._failed, f"{what} failed: {exc}", failed)
            else:
                self.later(done, future.result())

        self.data.executor.submit(work).add_done_callback(finished)

    def on_failure(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(sentence)`` when background work or the update of a view fails."""
        self._failure_listeners.append(listener)

    def _failed(self, text: str, failed: Callable[[], None] | None) -> None:
        if failed is not None:
            failed()
        for listener in self._failure_listeners:
            listener(text)

    def close(self) -> None:
        """The browser tab is gone: stop scheduling work on the document."""
        self.alive = False
