"""Pooling: the pool tab's ranking, the chosen pool sample at the slider's epoch, "label this" and its undo,
and the pool on the canvas while the tab is open (a tapped pool dot becomes the chosen row).

Labels go through the run's shared :class:`~timetravel.server_app.review.Review`
(``feedback.jsonl``, fsynced, with ``"split": "pool"``) before the page confirms them; the
ranking is the run's shared :class:`~timetravel.server_app.pool.PoolRanking`. Labels from
other tabs and processes arrive as review snapshots (the review queue's broadcast and its
poll of the log), and the tab re-ranks when their pool labels differ from its ranking's.
"""

from __future__ import annotations

import logging
from functools import partial

from timetravel.errors import TimetravelError
from timetravel.feedback import FeedbackEvent
from timetravel.server_app._bokeh import TabSlot
from timetravel.server_app.pool import PoolHistory, PoolRanking, PoolRanks
from timetravel.server_app.pool_view import PoolView
from timetravel.server_app.session import FRAME, POOL, REVIEW, PoolMark, Session

logger = logging.getLogger(__name__)


class Pooling:
    """The pool tab of one session.

    Parameters
    ----------
    session : Session
    view : PoolView
    tab : TabSlot
    pool : PoolRanking
        The run's pool ranking (shared by every session).
    """

    def __init__(self, session: Session, view: PoolView, tab: TabSlot, pool: PoolRanking) -> None:
        self.s, self.view, self.tab, self.pool = session, view, tab, pool
        self.ranks: PoolRanks | None = None
        self.row: int | None = None  # the chosen pool row
        self._event: FeedbackEvent | None = None  # this tab's latest saved label or undo, confirmed on the page
        self._busy = False  # a ranking or a label is in flight (one at a time: a held key repeats)
        self._stale = False  # the labels changed while busy: rank again after

    def wire(self) -> None:
        v = self.view
        v.on_row(self.choose)
        v.on_label(self.label)
        v.on_undo(self.undo)
        v.on_canvas_toggle(self._publish)
        self.tab.on_shown(self.refresh)
        self.tab.on_hidden(self._publish)
        self.s.subscribe(self._on_change)

    def start(self) -> None:
        self._rank()

    def refresh(self) -> None:
        """Bring the tab up to date (it has just come into view)."""
        if self.ranks is not None:
            self._show()

    def _on_change(self, changed: frozenset[str]) -> None:
        chosen = self.s.pool.row
        if POOL in changed and chosen is not None and chosen != self.row and self._ready():  # a pool dot tapped
            self.choose(chosen)
        if REVIEW in changed and (self.ranks is None or self.s.snap.pool_labels != self.ranks.labels):
            self._rank()
        if FRAME in changed and self.tab.shown() and self._ready() and self.row is not None:
            self._show_epoch()

    def _ready(self) -> bool:
        return self.ranks is not None and self.ranks.status == "ready"

    # -- ranking -------------------------------------------------------------------------

    def _rank(self) -> None:
        if self._busy:
            self._stale = True
            return
        self._busy = True
        self.s.background(lambda: self.pool.rank(self.s.review.pool_labels()), self._ranked, "ranking the pool",
                          failed=self._not_busy)  # fmt: skip

    def _ranked(self, ranks: PoolRanks, row: int | None = None, moved: bool = False) -> None:
        """A new ranking: keep the chosen row while it is unlabelled (``moved``: choose ``row`` instead)."""
        self._busy = False
        self.ranks = ranks
        if moved:
            self.row = row
        elif self.row is None or self.row in ranks.labels:
            self.row = ranks.rows[0] if ranks.rows else None
        self._show()
        if self._stale:
            self._stale = False
            if self.s.snap.pool_labels != ranks.labels:
                self._rank()

    def _not_busy(self) -> None:
        self._busy = False

    # -- the user's intent ---------------------------------------------------------------

    def choose(self, row: int) -> None:
        """Show pool ``row`` (a table click)."""
        self.row = int(row)
        if self.ranks is not None:
            self._show()

    def label(self, label: int) -> None:
        """Give the chosen row ``label``: saved to feedback.jsonl, then re-ranked and on to the next row."""
        row = self.row
        if row is None or self._busy or not self._ready():
            return
        self._busy = True
        review, session = self.s.review, self.s.id

        def work() -> tuple[FeedbackEvent | None, PoolRanks]:
            event = review.label_pool(row, label, session).pool_event
            return event, self.pool.rank(review.pool_labels())

        def done(result: tuple[FeedbackEvent | None, PoolRanks]) -> None:
            self._event, ranks = result
            self._ranked(ranks, ranks.rows[0] if ranks.rows else None, moved=True)

        self.s.background(work, done, f"saving the label of pool #{row}", failed=self._not_busy)

    def undo(self) -> None:
        """Withdraw the most recent pool label (any tab's) and show its row again."""
        if self._busy or not self._ready():
            return
        self._busy = True
        review, session = self.s.review, self.s.id

        def work() -> tuple[FeedbackEvent | None, PoolRanks]:
            snap = review.undo_pool(session)
            return (None if snap is None else snap.pool_event), self.pool.rank(review.pool_labels())

        def done(result: tuple[FeedbackEvent | None, PoolRanks]) -> None:
            event, ranks = result
            if event is None:
                self._ranked(ranks)
                return
            self._event = event
            self._ranked(ranks, event.sample, moved=True)

        self.s.background(work, done, "undoing the last pool label", failed=self._not_busy)

    # -- showing -------------------------------------------------------------------------

    def _publish(self) -> None:
        """Tell the canvas whether to draw the pool (this tab open, its checkbox on) and which row is chosen."""
        mark = PoolMark(shown=self.tab.shown() and self.view.canvas_shown() and self._ready(), row=self.row)
        if mark != self.s.pool:
            self.s.change(pool=mark)

    def _show(self) -> None:
        data, ranks, v, row = self.s.data, self.ranks, self.view, self.row
        v.show_ranks(data, ranks, row, self._busy)
        v.show_counters(data, ranks, self._event)
        self._publish()
        if ranks.status != "ready" or row is None:
            v.clear_sample()
            return
        predicted, confidence, p_wrong = self.pool.prediction(row)
        v.preselect(row, predicted)
        v.show_sample(data, row, predicted, confidence, p_wrong, ranks.score.get(row), self.pool.reasons(row),
                      ranks.labels.get(row))  # fmt: skip
        self._show_epoch()
        self.s.background(partial(self.pool.history, row), partial(self._history_loaded, row),
                          f"reading the history of pool #{row}")  # fmt: skip

    def _history_loaded(self, row: int, history: PoolHistory) -> None:
        if row == self.row:
            self.view.show_history(self.s.data, history)

    def _show_epoch(self) -> None:
        epoch = self.s.frame.epoch
        try:
            top = self.pool.top_classes(self.row, epoch)
        except TimetravelError as exc:  # an epoch's pool file unreadable: one sentence, the rest keeps working
            logger.warning("pool rows of epoch %d: %s", epoch, exc)
            self.view.show_unreadable(epoch, str(exc))
            return
        self.view.show_epoch(self.s.data, epoch, top, self.pool.epochs)
