"""The groups a session can pick: classes, metadata values, confused class pairs, saved selections.

Saved selections live in ``RUN/selections.json`` (:mod:`timetravel.selections`) and are
shared by every session; a suggested intersection the user clicked is kept for the
session only, so it can be compared or seeded.
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np

from timetravel.errors import StoreError
from timetravel.groups import Group, Outcomes, column_groups, pair_groups
from timetravel.selections import read_selections, save_selection
from timetravel.server_app.data import RunData

logger = logging.getLogger(__name__)


class GroupCatalog:
    """Named groups of one session, rebuilt when a selection is saved (listeners hear of it)."""

    def __init__(self, data: RunData) -> None:
        self.data = data
        self._fixed: list[Group] = []
        self._saved: list[Group] = []
        self._session: dict[str, Group] = {}
        self._listeners: list[Callable[[], None]] = []
        self._loaded = False
        self._load_saved()

    def load(self, outcomes: Outcomes) -> None:
        """Add the classes, metadata values and the pairs most confused at the last epoch (once)."""
        if self._loaded:
            self._changed()
            return
        self._loaded = True
        data = self.data
        fixed: list[Group] = []
        for col in data.analysis.columns():
            fixed += column_groups(col)
        fixed += pair_groups(outcomes, int(outcomes.epochs[-1]), data.class_names)
        self._fixed = fixed
        self._changed()

    def _load_saved(self) -> None:
        try:
            saved = read_selections(self.data.path, self.data.n_samples)
        except StoreError as exc:  # the groups still work; the log says what to do with the file
            logger.warning("%s", exc)
            saved = {}
        self._saved = [Group(name, "selection", idx) for name, idx in saved.items()]
        self._changed()

    def subscribe(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()

    def groups(self) -> list[Group]:
        return [*self._saved, *self._session.values(), *self._fixed]

    def names(self) -> list[str]:
        return [g.name for g in self.groups()]

    def get(self, name: str) -> Group | None:
        return next((g for g in self.groups() if g.name == name), None)

    def keep(self, group: Group) -> None:
        """Keep ``group`` (a clicked suggestion) for this session."""
        if self.get(group.name) is None:
            self._session[group.name] = group
            self._changed()

    def save(self, name: str, indices: np.ndarray) -> Group:
        """Save the selection ``indices`` as ``name`` for every session (raises StoreError on bad input)."""
        save_selection(self.data.path, name, indices, self.data.n_samples)
        self._load_saved()
        return self.get(name)
