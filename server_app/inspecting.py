"""The inspector follows the session's inspected sample: summary, curves, neighbours at the epoch."""

from __future__ import annotations

import html
from functools import partial

import numpy as np

from timetravel.server_app.data import SampleHistory
from timetravel.server_app.inspector import InspectorView
from timetravel.server_app.session import FRAME, REVIEW, TARGET, Session


_STATES = {"accept": "accepted", "relabel": "relabelled", "drop": "accepted, dropped", "flag": "accepted, flagged",
           "reject": "rejected"}


class Inspecting:
    """Fills the inspector for ``session.target``; slow reads (history, neighbours) run off the loop."""

    def __init__(self, session: Session, inspector: InspectorView) -> None:
        self.s, self.inspector = session, inspector

    def wire(self) -> None:
        self.s.subscribe(self._on_change)

    def _on_change(self, changed: frozenset[str]) -> None:
        s = self.s
        if TARGET in changed:
            self._show_target()
        elif s.target is not None:
            if REVIEW in changed:
                self._show_summary()
            if FRAME in changed:
                self._show_epoch()

    def _show_target(self) -> None:
        sample = self.s.target
        if sample is None:
            self.inspector.clear()
            return
        self._show_summary()
        self._show_epoch()
        data, epoch = self.s.data, self.s.frame.epoch
        self.s.background(partial(data.sample_history, sample), partial(self._history_loaded, sample),
                          "reading the sample's history")  # fmt: skip
        self.s.background(partial(data.neighbours, sample, epoch), partial(self._neighbours_loaded, sample, epoch),
                          "finding neighbours")  # fmt: skip

    def _show_summary(self) -> None:
        s = self.s
        event = s.snap.standing.get(s.target)
        state = "not reviewed" if event is None else _STATES[event.decision]
        if event is not None and event.label is not None:
            state += f" as {html.escape(s.data.class_names[event.label])}"
        self.inspector.show(s.data, s.target, decision=state, reasons=s.review.reasons(s.target), note=s.snap.message)

    def _show_epoch(self) -> None:
        f, i = self.s.frame, self.s.target
        self.inspector.show_epoch(self.s.data, f.epoch, int(f.pred[i]), float(f.confidence[i]))

    def _history_loaded(self, sample: int, history: SampleHistory) -> None:
        if sample == self.s.target:
            self.inspector.show_history(self.s.data, history)

    def _neighbours_loaded(self, sample: int, epoch: int, neighbours: np.ndarray) -> None:
        if sample == self.s.target:
            self.inspector.show_neighbours(self.s.data, epoch, neighbours, self.s.frame.pred[neighbours])
