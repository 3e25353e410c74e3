"""Reviewing: the recommendation queue, accept (relabel / drop / flag) / reject / undo, other tabs' decisions,
the export.

Every decision goes through the run's shared :class:`~timetravel.server_app.review.Review`
(written to ``feedback.jsonl`` and fsynced before it is shown); a session hears of every
decision, its own or another tab's, as a new review snapshot.
"""

from __future__ import annotations

import html
import time
from functools import partial
from typing import Any, Callable

from timetravel.export import accepted_records, render, write_export
from timetravel.feedback import FeedbackState
from timetravel.server_app.recommendations import QueueView
from timetravel.server_app.review import ReviewSnapshot
from timetravel.server_app.session import QUEUE_SIZE, REVIEW, SCOPE, TARGET, Session

LOG_POLL_MS = 2000  # how often a session checks the feedback log for other processes' decisions


class Reviewing:
    """Queue panel, decisions and export of one session.

    Parameters
    ----------
    session : Session
    queue : QueueView
    notice : Div
        Page-wide notes (unprojected epochs, unreadable feedback lines).
    """

    def __init__(self, session: Session, queue: QueueView, notice: Any) -> None:
        self.s, self.queue, self.notice = session, queue, notice
        self._deciding = False
        self._polling = False

    def wire(self) -> None:
        q = self.queue
        q.on_row(self.s.inspect)
        q.on_size(lambda k: self.s.change(queue_size=k))
        q.on_decide(self.decide)
        q.on_undo(self.undo)
        q.on_export(self.export)
        q.on_clear_scope(lambda: self.s.change(scope=None))
        self.s.subscribe(self._on_change)

    def start(self) -> None:
        """Hear the review's broadcasts and poll the log for other processes' decisions."""
        s = self.s
        s.review.subscribe(self._on_review)
        s.doc.on_session_destroyed(self._on_destroyed)
        s.doc.add_periodic_callback(self._poll_log, LOG_POLL_MS)

    def _on_destroyed(self, _context: Any) -> None:
        self.s.close()
        self.s.review.unsubscribe(self._on_review)

    def _on_change(self, changed: frozenset[str]) -> None:
        if changed & {TARGET, REVIEW, QUEUE_SIZE, SCOPE}:
            s = self.s
            suggestion = None if s.target is None else s.review.suggestion(s.target)
            if s.scope is None:
                self.queue.show(s.data, s.snap, s.target, suggestion)
                self.queue.show_scope(None)
            else:
                rows = s.review.recommend_within(s.scope.indices, s.queue_size)
                self.queue.show(s.data, s.snap, s.target, suggestion, rows)
                self.queue.show_scope(f"<span class='tt-note' name='scope_note'>Only <b>{html.escape(s.scope.name)}"
                                      f"</b> ({len(s.scope):,} samples)</span>")  # fmt: skip
            self._show_notice()

    # -- intent from a group -----------------------------------------------------------

    def seed(self, samples, group: str, report: Callable[[str], None]) -> None:
        """"Find more like these": seed the recommender with ``samples`` as accepted examples of ``group``.

        Recorded in feedback.jsonl as one batch (Undo withdraws it); ``report(sentence)`` says what happened.
        """
        if self._deciding:
            return
        self._deciding = True

        def done(snap: ReviewSnapshot) -> None:
            self._decided(snap)
            n = sum(1 for g in snap.seeds.values() if g == group)
            report(f"<span class='tt-ok' name='seed_note'>✓ {n} samples of “{html.escape(group)}” seed the "
                   "recommender; the queue now leads with samples that share their dynamics (Undo withdraws "
                   "them).</span>")  # fmt: skip

        def failed() -> None:
            self._deciding = False

        self.s.background(partial(self.s.review.seed, samples, group, self.s.id), done,
                          f"seeding the recommender with “{group}”", failed=failed)  # fmt: skip

    # -- decisions ---------------------------------------------------------------------

    def decide(self, decision: str, label: int | None = None) -> None:
        """Decide on the inspected sample (``label``: a relabel's class); one decision at a time (a held key repeats)."""
        sample = self.s.target
        if sample is None or self._deciding:
            return
        self._deciding = True
        self.s.background(partial(self.s.review.decide, sample, decision, self.s.id, label), self._decided,
                          f"saving the {decision} of #{sample}", failed=self._not_deciding)  # fmt: skip

    def _decided(self, snap: ReviewSnapshot | None) -> None:
        """The decision is in feedback.jsonl (fsynced); the counters line confirms it."""
        self._deciding = False
        if snap is not None:
            self._show_snapshot(snap)

    def undo(self) -> None:
        """Withdraw the most recent standing decision and inspect its sample again."""
        if self._deciding:
            return
        self._deciding = True
        self.s.background(partial(self.s.review.undo, self.s.id), self._undone, "undo", failed=self._not_deciding)

    def _undone(self, snap: ReviewSnapshot | None) -> None:
        self._deciding = False
        if snap is None or snap.last_event is None:
            return
        self._show_snapshot(snap)
        self.s.inspect(snap.last_event.sample)

    def _not_deciding(self) -> None:
        self._deciding = False

    def _on_review(self, snap: ReviewSnapshot) -> None:
        """Review listener: called from whichever thread changed the review."""
        self.s.later(self._show_snapshot, snap)

    def _show_snapshot(self, snap: ReviewSnapshot) -> None:
        """A newer review: move off a sample that was just decided, else keep the inspected one."""
        s = self.s
        if snap.version <= s.snap.version:
            return
        if s.target is not None and s.target in snap.decisions:
            s.change(snap=snap, target=next((i for i in snap.shown(s.queue_size) if i not in snap.decisions), None))
        elif s.target is None and snap.queue:
            s.change(snap=snap, target=snap.shown(s.queue_size)[0])
        else:
            s.change(snap=snap)

    def _show_notice(self) -> None:
        notes = []
        data, snap = self.s.data, self.s.snap
        missing = data.unprojected_epochs
        if missing:
            notes.append(
                f"<div class='tt-note'>{len(missing)} recorded epochs are not projected yet; run "
                f"<code>timetravel project {html.escape(str(data.path))}</code> to see them.</div>"
            )
        if snap.log_errors:
            shown = "".join(f"<li>{html.escape(e)}</li>" for e in snap.log_errors[:5])
            more = f"<li>... and {len(snap.log_errors) - 5} more</li>" if len(snap.log_errors) > 5 else ""
            notes.append(
                f"<div class='tt-error' name='log_errors'><b>{len(snap.log_errors)} line(s) of feedback.jsonl "
                f"could not be read and were skipped</b>; the other {len(snap.decisions)} decisions were "
                f"loaded.<ul>{shown}{more}</ul></div>"
            )
        self.notice.text = "".join(notes)

    def _poll_log(self) -> None:
        if self._polling:
            return
        self._polling = True

        def done(_changed: bool) -> None:
            self._polling = False

        self.s.background(self.s.review.sync_with_disk, done, "reading feedback.jsonl", failed=partial(done, False))

    # -- export ------------------------------------------------------------------------

    def export(self, fmt: str) -> None:
        """Write the accepted samples as ``fmt`` ("csv" or "json") and offer them as a download."""
        state = FeedbackState(decisions=dict(self.s.snap.decisions), standing=dict(self.s.snap.standing))
        self.s.background(partial(self._write_export, fmt, state), self._exported, f"exporting {fmt.upper()}")

    def _write_export(self, fmt: str, state: FeedbackState) -> tuple[str, str, int]:
        store = self.s.data.store
        records = accepted_records(store, state, suggestions=self.s.review.suggestions())
        text = render(records, store, fmt)
        path = write_export(store.path / "exports" / f"accepted.{fmt}", text)
        return text, str(path), len(records)

    def _exported(self, result: tuple[str, str, int]) -> None:
        text, path, count = result
        fmt = path.rsplit(".", 1)[-1]
        mime = "text/csv" if fmt == "csv" else "application/json"
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.queue.offer_download(text, f"accepted-{stamp}.{fmt}", mime, f"{count} samples; also saved to {path}")
