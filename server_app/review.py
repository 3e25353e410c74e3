"""The review of one run, shared by every session of the server process.

Holds the feedback log, the detection (features, suspicion scores, reasons) and the
feedback recommender. Every decision is appended to ``feedback.jsonl`` and fsynced
before anything else happens, then the recommender re-ranks and every open session
is told. Decisions are serialised by one lock, so two tabs never interleave a half
update; a log changed by another process is noticed and replayed.

The labels given to the run's unlabelled pool (active learning) share the log, the
lock and the replay, but stand apart from the training samples' review: their own
undo order (:meth:`Review.undo_pool`), never in ``decisions`` or the queue's undo.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from timetravel.server_app.data import RunData
from timetravel.detection import has_detection
from timetravel.errors import FeedbackLogError, TimetravelError
from timetravel.feedback import FeedbackEvent, FeedbackLog, FeedbackState
from timetravel.groups import suspicion_percentile

logger = logging.getLogger(__name__)

QUEUE_DEPTH = 20  # recommendations kept per update; sessions show the first k of them


@dataclass(frozen=True)
class ReviewSnapshot:
    """What every session shows about the review at one moment.

    ``status`` is ``"loading"``, ``"ready"``, ``"missing"`` (no detection yet) or
    ``"failed"``; ``message`` says what to do when it is not ready.
    """

    version: int
    status: str
    message: str
    decisions: dict[int, bool]
    queue: list[int]
    scores: dict[int, float]
    reasons: dict[int, list[str]]
    suggested: dict[int, int]
    log_errors: list[str]
    hits: int | None
    last_event: FeedbackEvent | None = None
    order: list[int] = field(default_factory=list)
    standing: dict[int, FeedbackEvent] = field(default_factory=dict)  # the decision kind and relabel target
    seeds: dict[int, str] = field(default_factory=dict)  # seeded sample -> its group's name
    pool_labels: dict[int, int] = field(default_factory=dict)  # pool row -> the label given, in decision order
    pool_event: FeedbackEvent | None = None  # the latest pool label or undo appended by this server

    def shown(self, k: int) -> list[int]:
        """The first ``k`` recommendations, the likeliest to be accepted first.

        The recommender picks them by a posterior sample (exploration), so its own order
        can disagree with the posterior-mean p(accept) the queue shows; the rows on show
        are ordered by that p(accept), which is what the user reads.
        """
        return by_score(self.queue[:k], self.scores)


def by_score(rows: list[int], scores: dict[int, float]) -> list[int]:
    """``rows`` by decreasing score (a row without one last), ties in their given order."""
    return sorted(rows, key=lambda i: -scores.get(i, float("-inf")))


class _Ranking:
    """Detection (``RUN/features/``) plus feedback recommender, behind the few calls the app makes."""

    def __init__(self, data: RunData) -> None:
        from timetravel.detection import load_detection

        self.detection = load_detection(data.store)
        self.recommender = self.detection.recommender(random_state=0)

    def restore(self, decisions: dict[int, bool]) -> None:
        """Forget all decisions and replay the standing ones (after an undo or another process's edits)."""
        self.recommender.restore(decisions)

    def update(self, sample: int, accepted: bool) -> None:
        self.recommender.update([sample], [accepted])

    def seed(self, samples: list[int]) -> None:
        """Take ``samples`` as accepted examples of what the user is after."""
        self.recommender.update(samples, [True] * len(samples))

    def recommend_within(self, candidates: np.ndarray, exclude: list[int], k: int) -> list[int]:
        """The ``k`` candidates the model expects the user to accept most (``exclude``: already known)."""
        candidates = np.setdiff1d(np.asarray(candidates, dtype=np.int64), np.asarray(exclude, dtype=np.int64))
        scores = self.recommender.log_odds()[candidates]
        return candidates[np.argsort(-scores, kind="stable")[:k]].tolist()

    def recommend(self, k: int) -> tuple[list[int], dict[int, float]]:
        """The next ``k`` samples and the model's probability that the user accepts each."""
        queue = self.recommender.recommend(k)
        p_accept = 1.0 / (1.0 + np.exp(-self.recommender.log_odds()[queue].astype(np.float64)))
        return queue.tolist(), dict(zip(queue.tolist(), p_accept.tolist()))

    def reasons(self, sample: int) -> list[str]:
        return list(self.detection.detector.reasons(sample))

    def suspicion(self) -> np.ndarray:
        """Every sample's suspicion as a percentile of the detector's scores (1 = most suspicious)."""
        if not hasattr(self, "_suspicion"):
            self._suspicion = suspicion_percentile(self.detection.scores)
        return self._suspicion

    def suggestions(self) -> np.ndarray:
        """The detector's suggested label per sample (the most likely other class)."""
        return self.detection.features.suggested


class Review:
    """Shared review state of one run; see the module docstring.

    Parameters
    ----------
    data : RunData
        The run.
    """

    def __init__(self, data: RunData) -> None:
        self.data = data
        self.log = FeedbackLog(data.path, data.n_samples, data.n_classes, data.store.n_pool or None)
        self._lock = threading.RLock()
        self._listeners: set[Callable[[ReviewSnapshot], None]] = set()
        self._ranking: _Ranking | None = None
        self._status, self._message = "loading", "Ranking the samples..."
        self._started = False
        self._version = 0
        self._state = FeedbackState()
        self._order: list[int] = []
        self._pool_order: list[int] = []  # pool rows in label order, for undo_pool
        self._pool_event: FeedbackEvent | None = None
        self._log_stamp: tuple[int, float] = (-1, -1.0)
        self._queue: list[int] = []
        self._scores: dict[int, float] = {}
        self._last_event: FeedbackEvent | None = None
        self._reload_log()

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Load the detection and fit the recommender in the background (once)."""
        with self._lock:
            if self._started:
                return
            self._started = True
        self.data.executor.submit(self._load_ranking)

    def _load_ranking(self) -> None:
        try:
            ranking = _Ranking(self.data)
        except TimetravelError as exc:
            if not has_detection(self.data.store):
                self._set_status("missing", self._missing_message())
            else:
                self._set_status("failed", f"The detection results cannot be used: {exc}")
            return
        except Exception as exc:  # noqa: BLE001 - e.g. features written by another version: say what to do
            logger.exception("loading the detection failed")
            self._set_status(
                "failed",
                f"The detection results could not be loaded ({type(exc).__name__}: {exc}); "
                f"run `timetravel detect {self.data.path}` again and reload this page.",
            )
            return
        with self._lock:
            self._ranking = ranking
            ranking.restore(self._known())
            self._status, self._message = "ready", ""
            self._rerank()
        self._publish()

    def _missing_message(self) -> str:
        return (
            f"No detection for this run yet: run `timetravel detect {self.data.path}` "
            "and reload this page to get the recommendation queue."
        )

    def _set_status(self, status: str, message: str) -> None:
        with self._lock:
            self._status, self._message = status, message
            self._version += 1
        logger.warning("review of %s: %s", self.data.path, message)
        self._publish()

    # -- listeners ---------------------------------------------------------------------

    def subscribe(self, listener: Callable[[ReviewSnapshot], None]) -> None:
        """Call ``listener(snapshot)`` after every change (from whichever thread made it)."""
        with self._lock:
            self._listeners.add(listener)

    def unsubscribe(self, listener: Callable[[ReviewSnapshot], None]) -> None:
        with self._lock:
            self._listeners.discard(listener)

    def _publish(self) -> ReviewSnapshot:
        snap = self.snapshot()
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(snap)
            except Exception:  # noqa: BLE001 - one closed session must not stop the others
                logger.exception("a session failed to receive a review update")
        return snap

    def snapshot(self) -> ReviewSnapshot:
        """The current state, safe to hand to any session."""
        with self._lock:
            decisions = dict(self._state.decisions)
            reasons, suggested = {}, {}
            if self._ranking is not None:
                reasons = {i: self._ranking.reasons(i) for i in self._queue}
                labels = self._ranking.suggestions()
                suggested = {i: int(labels[i]) for i in self._queue}
            return ReviewSnapshot(
                version=self._version,
                status=self._status,
                message=self._message,
                decisions=decisions,
                queue=list(self._queue),
                scores=dict(self._scores),
                reasons=reasons,
                suggested=suggested,
                log_errors=list(self._state.errors),
                hits=self._hits(decisions),
                last_event=self._last_event,
                order=list(self._order),
                standing=dict(self._state.standing),
                seeds={i: str(e.group) for i, e in self._state.seeds.items()},
                pool_labels=dict(self._state.pool_labels),
                pool_event=self._pool_event,
            )

    def _hits(self, decisions: dict[int, bool]) -> int | None:
        mask = self.data.store.noise_mask
        if mask is None:
            return None
        return int(np.count_nonzero(mask[list(decisions)])) if decisions else 0

    def suggestions(self) -> dict[int, int] | None:
        """The detector's suggested label of every accepted sample, or None without a detection."""
        with self._lock:
            if self._ranking is None:
                return None
            suggested = self._ranking.suggestions()
            return {i: int(suggested[i]) for i, ok in self._state.decisions.items() if ok}

    def suggestion(self, sample: int) -> int:
        """The label to preselect for relabelling ``sample``: the detector's suggestion, else the model's best other class."""
        from timetravel.export import suggest_labels

        sample = self.data.check_index(sample)
        with self._lock:
            if self._ranking is not None:
                return int(self._ranking.suggestions()[sample])
        return int(suggest_labels(self.data.store, np.array([sample]))[0][0])

    def suspicion(self) -> np.ndarray | None:
        """Suspicion percentile of every sample, or None while there is no detection."""
        with self._lock:
            return None if self._ranking is None else self._ranking.suspicion()

    def reasons(self, sample: int) -> list[str] | None:
        """The detector's reasons for ``sample``, or None while there is no detection."""
        with self._lock:
            return None if self._ranking is None else self._ranking.reasons(self.data.check_index(sample))

    # -- decisions ---------------------------------------------------------------------

    def decide(self, sample: int, decision: str, session: str = "", label: int | None = None) -> ReviewSnapshot:
        """Record ``decision`` on ``sample`` (fsynced first), re-rank, notify every session.

        ``label`` is the new class of a ``"relabel"`` (see :mod:`timetravel.feedback`).

        Raises
        ------
        FeedbackLogError
            Bad decision or sample; nothing is written.
        """
        with self._lock:
            external = self._log_changed()
            event = self.log.append(int(sample), decision, session, label=label)
            if external:
                self._reload_log()
            else:
                self._apply(event)
                self._log_stamp = self._stamp()
            if self._ranking is not None:
                if external or decision == "undo":
                    self._ranking.restore(self._known())
                elif event.sample in self._state.decisions:
                    self._ranking.update(event.sample, self._state.decisions[event.sample])
            self._last_event = event
            self._rerank()
        return self._publish()

    def undo(self, session: str = "") -> ReviewSnapshot | None:
        """Withdraw the most recent standing decision (or batch of seeds); None when there is none."""
        with self._lock:
            if not self._order:
                return None
            sample = self._order[-1]
            seed = self._state.seeds.get(sample)
            if seed is None:
                return self.decide(sample, "undo", session)
            batch = [i for i in self._order if i in self._state.seeds and self._state.seeds[i].batch == seed.batch]
            external = self._log_changed()
            events = self.log.append_undos(batch, session)
            self._after_batch(events, external)
        return self._publish()

    def seed(self, samples, group: str, session: str = "") -> ReviewSnapshot:
        """Record ``samples`` (not yet decided or seeded) as seeds of ``group``, in one fsynced batch.

        The recommender takes them as accepted examples, so the queue fills with samples that share
        their dynamics; one :meth:`undo` withdraws the whole batch.

        Raises
        ------
        FeedbackLogError
            Nothing new to seed, or a sample is out of range; nothing is written.
        """
        with self._lock:
            known = self._known()
            fresh = [int(i) for i in dict.fromkeys(np.asarray(samples, dtype=np.int64).tolist()) if int(i) not in known]
            if not fresh:
                raise FeedbackLogError(f"every sample of {group!r} is already decided or seeded")
            external = self._log_changed()
            events = self.log.append_seeds(fresh, group, session)
            self._after_batch(events, external)
        return self._publish()

    def _after_batch(self, events: list[FeedbackEvent], external: bool) -> None:
        """Apply several appended events (seeds or undos) with one re-rank."""
        if external:
            self._reload_log()
        else:
            for event in events:
                self._apply(event)
            self._log_stamp = self._stamp()
        if self._ranking is not None:
            if external or events[0].decision == "undo":
                self._ranking.restore(self._known())
            else:
                self._ranking.seed([e.sample for e in events])
        self._last_event = events[-1]
        self._rerank()

    def _known(self) -> dict[int, bool]:
        """What the recommender learns from: the standing decisions, and the seeds as acceptances."""
        return {**{i: True for i in self._state.seeds}, **self._state.decisions}

    # -- the unlabelled pool ----------------------------------------------------------

    def pool_labels(self) -> dict[int, int]:
        """The standing pool labels (pool row -> class), in decision order."""
        with self._lock:
            return dict(self._state.pool_labels)

    def label_pool(self, row: int, label: int, session: str = "") -> ReviewSnapshot:
        """Give pool row ``row`` the class ``label`` (fsynced first), notify every session.

        Raises
        ------
        FeedbackLogError
            The row or the label is out of range; nothing is written.
        """
        with self._lock:
            external = self._log_changed()
            self._after_pool(self.log.append(int(row), "label", session, label=int(label), split="pool"), external)
        return self._publish()

    def undo_pool(self, session: str = "") -> ReviewSnapshot | None:
        """Withdraw the most recent standing pool label; None when there is none."""
        with self._lock:
            if not self._pool_order:
                return None
            external = self._log_changed()
            self._after_pool(self.log.append(self._pool_order[-1], "undo", session, split="pool"), external)
        return self._publish()

    def _after_pool(self, event: FeedbackEvent, external: bool) -> None:
        """Apply an appended pool event (replaying the whole log when another process changed it)."""
        if external:
            self._reload_log()
            if self._ranking is not None:
                self._ranking.restore(self._known())
                self._rerank()
        else:
            self._apply(event)
            self._log_stamp = self._stamp()
        self._pool_event = event

    def recommend_within(self, candidates: np.ndarray, k: int) -> list[int]:
        """The best ``k`` recommendations among ``candidates`` (not yet decided or seeded); [] without a ranking."""
        with self._lock:
            if self._ranking is None:
                return []
            return self._ranking.recommend_within(candidates, list(self._known()), k)

    def sync_with_disk(self) -> bool:
        """Replay the log if another process changed it; returns whether it had."""
        with self._lock:
            if not self._log_changed():
                return False
            self._reload_log()
            if self._ranking is not None:
                self._ranking.restore(self._known())
            self._rerank()
        self._publish()
        return True

    def _stamp(self) -> tuple[int, float]:
        try:
            st = os.stat(self.log.path)
        except FileNotFoundError:
            return (0, 0.0)
        return (st.st_size, st.st_mtime)

    def _log_changed(self) -> bool:
        return self._stamp() != self._log_stamp

    def _reload_log(self) -> None:
        """Replay the whole log (corrupt lines are reported in the snapshot and skipped)."""
        self._log_stamp = self._stamp()
        read = self.log.read()
        self._state = FeedbackState(errors=read.errors)
        self._order, self._pool_order = [], []
        for event in read.events:
            self._apply(event)

    def _apply(self, event: FeedbackEvent) -> None:
        """Apply one event with FeedbackLog's replay rules, keeping the order for undo (the pool's apart)."""
        if event.split == "pool":
            order, had = self._pool_order, event.sample in self._state.pool_labels
        else:
            order, had = self._order, event.sample in self._state.standing or event.sample in self._state.seeds
        self._state.apply(event)
        if event.decision != "undo":
            order.append(event.sample)
        elif had:
            del order[len(order) - 1 - order[::-1].index(event.sample)]
        self._version += 1

    def _rerank(self) -> None:
        if self._ranking is None:
            self._queue, self._scores = [], {}
            return
        self._queue, self._scores = self._ranking.recommend(QUEUE_DEPTH)
        self._version += 1

