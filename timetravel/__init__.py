"""timetravel: an interactive, time-travelling debugger for deep classifiers."""

from timetravel.errors import DatasetError, FeedbackLogError, StoreError, TimetravelError
from timetravel.store import RunStore, RunWriter, Territory

__all__ = [
    "DatasetError",
    "FeedbackLogError",
    "RunStore",
    "RunWriter",
    "StoreError",
    "Territory",
    "TimetravelError",
]
__version__ = "0.1.0"
