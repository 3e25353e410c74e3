"""The feedback log: an append-only JSON-lines record of the user's decisions.

Each line is one event::

    {"sample": 17, "decision": "accept", "time": 1764427200.5, "session": "a1b2"}
    {"sample": 18, "decision": "relabel", "label": 3, "time": 1764427201.0, "session": "a1b2"}

``decision`` is one of

- ``"accept"``: the sample is what the user is looking for (no correction chosen);
- ``"relabel"``: accepted, and its label should be ``label`` (a class index);
- ``"drop"``: accepted, and it should be left out of training;
- ``"flag"``: accepted, and only marked (kept in training with its label);
- ``"reject"``: it is not what the user is looking for;
- ``"seed"``: an example of what the user is after, given as part of a group
  ("find more like these"), not a reviewed decision; the line names the group
  (``"group"``) and the batch it was given in (``"batch"``);
- ``"undo"``: withdraw the latest standing decision on that sample;
- ``"label"``: the user gives ``label`` to a sample of the run's unlabelled
  pool (active learning). Pool events carry ``"split": "pool"`` and their
  ``sample`` is a pool row; only ``label`` and ``undo`` apply to the pool::

    {"sample": 4, "decision": "label", "label": 2, "split": "pool", "time": 1764427202.0, "session": "a1b2"}

``accept``, ``relabel``, ``drop`` and ``flag`` are acceptances
(:attr:`FeedbackState.decisions`; what they mean for retraining is
:mod:`timetravel.correction`'s job). Seeds stand apart
(:attr:`FeedbackState.seeds`): the recommender takes them as accepted examples,
but they are neither exported nor corrected. Pool labels stand in
:attr:`FeedbackState.pool_labels`. Lines are appended with ``O_APPEND`` and fsynced before
:meth:`FeedbackLog.append` returns, so several app tabs or processes can share
one log and a crash never loses a confirmed decision. A corrupt line is
reported and skipped; it never hides the lines after it.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from timetravel._io import append_lines_fsynced
from timetravel.errors import FeedbackLogError

logger = logging.getLogger(__name__)

DECISIONS = ("accept", "relabel", "drop", "flag", "reject", "seed", "undo", "label")
SPLITS = ("train", "pool")
_LABELLED = frozenset({"relabel", "label"})  # decisions that carry a label
ACCEPTING = frozenset({"accept", "relabel", "drop", "flag"})
FEEDBACK_FILE = "feedback.jsonl"


@dataclass(frozen=True)
class FeedbackEvent:
    """One line of the feedback log."""

    sample: int
    decision: str
    time: float
    session: str = ""
    label: int | None = None  # the new label of a "relabel"
    group: str | None = None  # the group a "seed" came from
    batch: str | None = None  # the seeds given together (undone together)
    split: str = "train"  # "pool": sample is a row of the unlabelled pool (label = the label given)

    def to_json(self) -> str:
        """The event as one line of the log (without the newline)."""
        obj: dict = {"sample": self.sample, "decision": self.decision, "time": self.time, "session": self.session}
        for key in ("label", "group", "batch"):
            if getattr(self, key) is not None:
                obj[key] = getattr(self, key)
        if self.split != "train":
            obj["split"] = self.split
        return json.dumps(obj)


@dataclass
class FeedbackState:
    """The decisions standing after replaying a log.

    Attributes
    ----------
    decisions : dict of int to bool
        Sample index to accepted (True: accept, relabel, drop or flag) or
        rejected (False), in decision order.
    standing : dict of int to FeedbackEvent
        The event behind each standing decision (its kind and, for a relabel,
        the new label), in decision order.
    seeds : dict of int to FeedbackEvent
        Samples standing as seeds of a group ("find more like these"), in order.
    events : list of FeedbackEvent
        Every valid event, in log order.
    errors : list of str
        One message per skipped line ("line 7: not valid JSON").
    pool_labels : dict of int to int
        Pool row to the label the user gave it, in decision order.
    """

    decisions: dict[int, bool] = field(default_factory=dict)
    standing: dict[int, FeedbackEvent] = field(default_factory=dict)
    seeds: dict[int, FeedbackEvent] = field(default_factory=dict)
    events: list[FeedbackEvent] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    pool_labels: dict[int, int] = field(default_factory=dict)
    _history: dict[int, list[FeedbackEvent]] = field(default_factory=dict, repr=False)
    _pool_history: dict[int, list[FeedbackEvent]] = field(default_factory=dict, repr=False)

    def apply(self, event: FeedbackEvent) -> None:
        """Replay one more event: a decision stacks on the sample's earlier ones, ``undo`` pops the latest."""
        self.events.append(event)
        if event.split == "pool":
            self._apply_pool(event)
            return
        stack = self._history.setdefault(event.sample, [])
        if event.decision == "undo":
            if stack:
                stack.pop()
        else:
            stack.append(event)
        self.decisions.pop(event.sample, None)
        self.standing.pop(event.sample, None)
        self.seeds.pop(event.sample, None)
        if stack and stack[-1].decision == "seed":
            self.seeds[event.sample] = stack[-1]
        elif stack:
            self.decisions[event.sample] = stack[-1].decision in ACCEPTING
            self.standing[event.sample] = stack[-1]

    def _apply_pool(self, event: FeedbackEvent) -> None:
        stack = self._pool_history.setdefault(event.sample, [])
        if event.decision == "undo":
            if stack:
                stack.pop()
        else:
            stack.append(event)
        self.pool_labels.pop(event.sample, None)
        if stack:
            self.pool_labels[event.sample] = int(stack[-1].label)

    @property
    def accepted(self) -> list[int]:
        """Accepted samples, in decision order."""
        return [i for i, ok in self.decisions.items() if ok]

    @property
    def rejected(self) -> list[int]:
        """Rejected samples, in decision order."""
        return [i for i, ok in self.decisions.items() if not ok]


class FeedbackLog:
    """Reads and appends the ``feedback.jsonl`` log of a run.

    Parameters
    ----------
    path : path-like
        The log file, or a run directory (then ``RUN/feedback.jsonl``).
    n_samples : int, optional
        When given, events naming a sample outside ``[0, n_samples)`` are
        refused on append and reported on read.
    n_classes : int, optional
        When given, a relabel to a class outside ``[0, n_classes)`` is refused
        on append and reported on read.
    n_pool : int, optional
        When given, pool events naming a row outside ``[0, n_pool)`` are
        refused on append and reported on read.
    """

    def __init__(self, path: str | os.PathLike, n_samples: int | None = None, n_classes: int | None = None,
                 n_pool: int | None = None) -> None:
        path = Path(path)
        self.path = path / FEEDBACK_FILE if path.is_dir() else path
        self.n_samples = n_samples
        self.n_classes = n_classes
        self.n_pool = n_pool

    def _check(self, sample: int, decision: str, label: int | None = None, group: str | None = None,
               split: str = "train") -> None:
        if decision not in DECISIONS:
            raise FeedbackLogError(f"decision must be one of {DECISIONS}, got {decision!r}")
        if split not in SPLITS:
            raise FeedbackLogError(f"split must be one of {SPLITS}, got {split!r}")
        if decision != "undo" and (split == "pool") != (decision == "label"):
            raise FeedbackLogError(f"decision {decision!r} does not apply to the {split} set; pool samples take "
                                   "'label' and 'undo', training samples the others")
        if (decision == "seed") != (group is not None):
            raise FeedbackLogError(f"a seed, and only a seed, names its group; got group={group!r} with {decision!r}")
        size = self.n_pool if split == "pool" else self.n_samples
        if size is not None and not 0 <= sample < size:
            what = "pool rows" if split == "pool" else "samples"
            raise FeedbackLogError(f"sample {sample} is out of range for a run of {size} {what}")
        if decision not in _LABELLED:
            if label is not None:
                raise FeedbackLogError(f"only a relabel takes a label (or a pool label), got label={label!r} with "
                                       f"{decision!r}")
            return
        if label is None or isinstance(label, bool) or not isinstance(label, int) or label < 0:
            what = "a relabel needs the new label" if decision == "relabel" else "a pool label needs the label"
            raise FeedbackLogError(f"{what} as a class index >= 0, got {label!r}")
        if self.n_classes is not None and label >= self.n_classes:
            raise FeedbackLogError(f"label {label} is out of range for a run of {self.n_classes} classes")

    def append(self, sample: int, decision: str, session: str = "", *, label: int | None = None,
               split: str = "train") -> FeedbackEvent:
        """Append one decision and fsync it; returns the event.

        ``label``: the new class of a ``"relabel"``, or the class a pool row is
        given by ``"label"`` (with ``split="pool"``).
        """
        sample = int(sample)
        label = None if label is None else int(label)
        self._check(sample, decision, label, split=split)
        event = FeedbackEvent(sample=sample, decision=decision, time=time.time(), session=session, label=label,
                              split=split)
        self._append([event.to_json()])
        return event

    def append_seeds(self, samples, group: str, session: str = "") -> list[FeedbackEvent]:
        """Append ``samples`` as seeds of ``group`` (one batch), in one write and one fsync."""
        group = str(group)
        batch = os.urandom(6).hex()
        now = time.time()
        events = []
        for sample in samples:
            self._check(int(sample), "seed", None, group)
            events.append(FeedbackEvent(int(sample), "seed", now, session, group=group, batch=batch))
        if events:
            self._append([e.to_json() for e in events])
        return events

    def append_undos(self, samples, session: str = "") -> list[FeedbackEvent]:
        """Append an ``undo`` for each of ``samples`` (e.g. a batch of seeds), in one write and one fsync."""
        now = time.time()
        events = []
        for sample in samples:
            self._check(int(sample), "undo")
            events.append(FeedbackEvent(int(sample), "undo", now, session))
        if events:
            self._append([e.to_json() for e in events])
        return events

    def _append(self, lines: list[str]) -> None:
        """Append whole lines (one write, fsynced); a log that is not a regular file is refused, unchanged."""
        try:
            append_lines_fsynced(self.path, lines)
        except OSError as exc:
            raise FeedbackLogError(f"{self.path}: {_why_not_appendable(exc)}; the decision was not saved") from None

    def read(self) -> FeedbackState:
        """Replay the log into the standing decisions; corrupt lines are reported and skipped.

        A line that is corrupt only at its start (an older timetravel appended
        to a torn last line) still gives the complete record at its end.

        Raises
        ------
        FeedbackLogError
            The log exists but cannot be read (a directory, no permission).
        """
        state = FeedbackState()
        try:
            fh = open(self.path, "rb")
        except FileNotFoundError:
            return state
        except OSError as exc:
            raise FeedbackLogError(f"{self.path}: cannot be read ({exc.strerror or exc}); "
                                   "it must be the run's feedback log, a regular file") from None
        with fh:
            for lineno, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                try:
                    event = self._parse(raw)
                except (ValueError, TypeError, FeedbackLogError) as exc:
                    event = self._salvage(raw)
                    kept = "; the complete record at its end was kept" if event is not None else ""
                    msg = f"{self.path}: line {lineno} skipped ({exc}){kept}"
                    logger.warning(msg)
                    state.errors.append(msg)
                    if event is None:
                        continue
                state.apply(event)
        return state

    def _salvage(self, raw: bytes) -> FeedbackEvent | None:
        """The record glued after a torn line (``{"sample": 20, "decision": "acc{"sample": 84, ...}``), if any."""
        start = raw.rfind(b'{"sample"')
        if start <= 0:
            return None
        try:
            return self._parse(raw[start:])
        except (ValueError, TypeError, FeedbackLogError):
            return None

    def _parse(self, raw: bytes) -> FeedbackEvent:
        obj = json.loads(raw.decode("utf-8"))
        if not isinstance(obj, dict):
            raise ValueError("not a JSON object")
        missing = [key for key in ("sample", "decision") if key not in obj]
        if missing:
            raise ValueError(f"missing field {missing[0]!r}")
        sample, decision, label, group = obj["sample"], obj["decision"], obj.get("label"), obj.get("group")
        if not isinstance(sample, int) or isinstance(sample, bool):
            raise ValueError(f"sample must be an integer, got {sample!r}")
        split = obj.get("split", "train")
        self._check(sample, decision, label, None if group is None else str(group), split)
        batch = obj.get("batch")
        return FeedbackEvent(sample, decision, float(obj.get("time", 0.0)), str(obj.get("session", "")), label,
                             None if group is None else str(group), None if batch is None else str(batch),
                             split)  # fmt: skip


def _why_not_appendable(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "is a symbolic link; decisions are appended only to a regular file (replace the link with one)"
    if exc.errno == errno.EISDIR:
        return "is a directory, not a feedback log (move it away)"
    if exc.errno == errno.EINVAL:
        return "is not a regular file (replace it with one, or move it away)"
    return f"cannot be appended to ({exc.strerror or exc})"
