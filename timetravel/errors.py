"""Exception types raised by timetravel.

Every error a user can cause (a bad path, a corrupt store, an out-of-range
index) is raised as a subclass of :class:`TimetravelError` with a sentence
that says what was expected, what was found and, where possible, what to do.
"""

from __future__ import annotations


class TimetravelError(Exception):
    """Base class of all errors raised on purpose by timetravel."""


class StoreError(TimetravelError, ValueError):
    """A run store is missing, incomplete, corrupt or of an unknown version."""


class DatasetError(TimetravelError, ValueError):
    """A dataset is missing, malformed or asked for with bad parameters."""


class NoiseError(TimetravelError, ValueError):
    """A label-noise specification or transition matrix is invalid."""


class FeedbackLogError(TimetravelError, ValueError):
    """The feedback log cannot be read or written."""
