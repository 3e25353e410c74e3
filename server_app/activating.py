"""Activation patterns follow the session: the selection (or the epoch) changes, the heatmap follows.

Patterns are computed off the event loop; while one is computed only the newest request
is remembered, so dragging the slider never queues up stale epochs.
"""

from __future__ import annotations

import html
import time
from functools import partial

import numpy as np

from timetravel.activations import ActivationPattern, activation_pattern, prefetch_embeddings
from timetravel.errors import TimetravelError
from timetravel.server_app._bokeh import TabSlot
from timetravel.server_app.activations_view import ActivationsView
from timetravel.server_app.catalog import GroupCatalog
from timetravel.server_app.grouping import read_outcomes
from timetravel.server_app.session import FRAME, SELECTION, Session


class Activating:
    """Keeps the activations tab in step with the session's selection and epoch."""

    def __init__(self, session: Session, catalog: GroupCatalog, view: ActivationsView, tab: TabSlot) -> None:
        self.s, self.catalog, self.view, self.tab = session, catalog, view, tab
        self._busy = False
        self._wanted: tuple | None = None
        self._shown: tuple | None = None

    def wire(self) -> None:
        self.view.on_reference(self.refresh)
        self.tab.on_shown(self.refresh)
        self.catalog.subscribe(lambda: self.view.set_group_names(self.catalog.names()))
        self.s.subscribe(self._on_change)

    def start(self) -> None:
        """The catalog's groups (classes, metadata values, pairs) need every epoch's predictions."""
        read_outcomes(self.s, lambda train, _heldout: self.catalog.load(train))

    def _on_change(self, changed: frozenset[str]) -> None:
        if changed & {FRAME, SELECTION} and self.tab.shown():
            self.refresh()

    def _request(self) -> tuple:
        s = self.s
        return (s.frame.epoch, s.selected.tobytes(), self.view.reference_name())

    def refresh(self) -> None:
        """Show the pattern of the current selection at the current epoch (computed off the loop)."""
        if not len(self.s.selected):
            self._shown = None
            self.view.clear()
            return
        self._wanted = self._request()
        if self._busy or self._wanted == self._shown:
            return
        s = self.s
        reference = self.catalog.get(self.view.reference_name())
        work = partial(_timed, s.data, s.frame.epoch, s.selected.copy(),
                       None if reference is None else reference.indices, None if reference is None else reference.name)
        self._busy = True
        request = self._wanted
        self.s.background(work, partial(self._computed, request), "computing the activation pattern",
                          failed=self._failed)  # fmt: skip

    def _computed(self, request: tuple, result: tuple[ActivationPattern | None, float | str]) -> None:
        self._busy = False
        self._shown = request
        epochs, epoch = self.s.data.epochs, request[0]
        pos = epochs.index(epoch) if epoch in epochs else 0
        prefetch_embeddings(self.s.data.store, [e for e in epochs[max(pos - 1, 0) : pos + 2] if e != epoch])
        pattern, detail = result
        if pattern is None:
            self.view.clear(f"<div class='tt-note'>{html.escape(str(detail))}</div>")
        else:
            self.view.show(pattern, float(detail))
        if self._wanted != request:
            self.refresh()

    def _failed(self) -> None:
        self._busy = False
        self._shown = None


def _timed(data, epoch: int, selection: np.ndarray, reference: np.ndarray | None,
           reference_name: str | None) -> tuple[ActivationPattern | None, float | str]:  # fmt: skip
    """The pattern and how long it took (ms), or (None, why) when it cannot be computed."""
    start = time.perf_counter()
    try:
        pattern = activation_pattern(data.store, epoch, selection, reference, reference_name=reference_name)
    except TimetravelError as exc:
        return None, str(exc)
    return pattern, 1000 * (time.perf_counter() - start)
