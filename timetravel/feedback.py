"""The feedback log: an append-only JSON-lines record of the user's decisions.

Each line is one event::

    {"sample": 17, "decision": "accept", "time": 1764427200.5, "session": "a1b2"}

``decision`` is ``"accept"`` (the sample is what the user is looking for),
``"reject"`` (it is not) or ``"undo"`` (withdraw the latest standing decision
on that sample). Lines are appended with ``O_APPEND`` and fsynced before
:meth:`FeedbackLog.append` returns, so several app tabs or processes can share
one log and a crash never loses a confirmed decision. A corrupt line is
reported and skipped; it never hides the lines after it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from timetravel._io import append_line_fsynced
from timetravel.errors import FeedbackLogError

logger = logging.getLogger(__name__)

DECISIONS = ("accept", "reject", "undo")
FEEDBACK_FILE = "feedback.jsonl"


@dataclass(frozen=True)
class FeedbackEvent:
    """One line of the feedback log."""

    sample: int
    decision: str
    time: float
    session: str = ""


@dataclass
class FeedbackState:
    """The decisions standing after replaying a log.

    Attributes
    ----------
    decisions : dict of int to bool
        Sample index to accepted (True) or rejected (False), in decision order.
    events : list of FeedbackEvent
        Every valid event, in log order.
    errors : list of str
        One message per skipped line ("line 7: not valid JSON").
    """

    decisions: dict[int, bool] = field(default_factory=dict)
    events: list[FeedbackEvent] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

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
    """

    def __init__(self, path: str | os.PathLike, n_samples: int | None = None) -> None:
        path = Path(path)
        self.path = path / FEEDBACK_FILE if path.is_dir() else path
        self.n_samples = n_samples

    def _check(self, sample: int, decision: str) -> None:
        if decision not in DECISIONS:
            raise FeedbackLogError(f"decision must be one of {DECISIONS}, got {decision!r}")
        if self.n_samples is not None and not 0 <= sample < self.n_samples:
            raise FeedbackLogError(f"sample {sample} is out of range for a run of {self.n_samples} samples")

    def append(self, sample: int, decision: str, session: str = "") -> FeedbackEvent:
        """Append one decision and fsync it; returns the event written."""
        sample = int(sample)
        self._check(sample, decision)
        event = FeedbackEvent(sample=sample, decision=decision, time=time.time(), session=session)
        line = json.dumps(
            {"sample": event.sample, "decision": event.decision, "time": event.time, "session": event.session}
        )
        append_line_fsynced(self.path, line)
        return event

    def read(self) -> FeedbackState:
        """Replay the log into the standing decisions; corrupt lines are reported and skipped."""
        state = FeedbackState()
        if not self.path.exists():
            return state
        history: dict[int, list[bool]] = {}
        with open(self.path, "rb") as fh:
            for lineno, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                try:
                    event = self._parse(raw)
                except (ValueError, TypeError, FeedbackLogError) as exc:
                    msg = f"{self.path}: line {lineno} skipped ({exc})"
                    logger.warning(msg)
                    state.errors.append(msg)
                    continue
                state.events.append(event)
                stack = history.setdefault(event.sample, [])
                if event.decision == "undo":
                    if stack:
                        stack.pop()
                else:
                    stack.append(event.decision == "accept")
                state.decisions.pop(event.sample, None)
                if stack:
                    state.decisions[event.sample] = stack[-1]
        return state

    def _parse(self, raw: bytes) -> FeedbackEvent:
        obj = json.loads(raw.decode("utf-8"))
        if not isinstance(obj, dict):
            raise ValueError("not a JSON object")
        missing = [key for key in ("sample", "decision") if key not in obj]
        if missing:
            raise ValueError(f"missing field {missing[0]!r}")
        sample, decision = obj["sample"], obj["decision"]
        if not isinstance(sample, int) or isinstance(sample, bool):
            raise ValueError(f"sample must be an integer, got {sample!r}")
        self._check(sample, decision)
        return FeedbackEvent(sample, decision, float(obj.get("time", 0.0)), str(obj.get("session", "")))
