"""timetravel: an interactive, time-travelling debugger for deep classifiers."""

from timetravel.correction import Corrections, corrections
from timetravel.detection import Detection, detect, load_detection
from timetravel.detector import AbnormalityDetector
from timetravel.errors import DatasetError, FeedbackLogError, StoreError, TimetravelError
from timetravel.features import FeatureTable, extract_features
from timetravel.groups import GroupAnalysis
from timetravel.metadata import write_metadata
from timetravel.notebook import show
from timetravel.recommend import FeedbackRecommender
from timetravel.projection.store import Territory
from timetravel.store import RunStore, RunWriter
from timetravel.table import Table, features_table, ranking_table

__all__ = [
    "AbnormalityDetector",
    "Corrections",
    "DatasetError",
    "Detection",
    "FeatureTable",
    "FeedbackRecommender",
    "FeedbackLogError",
    "GroupAnalysis",
    "RunStore",
    "RunWriter",
    "StoreError",
    "Table",
    "Recorder",
    "Territory",
    "TimetravelError",
    "corrections",
    "detect",
    "extract_features",
    "features_table",
    "load_detection",
    "ranking_table",
    "show",
    "write_metadata",
]
__version__ = "0.1.0"


def __getattr__(name: str):
    # the Recorder needs torch: imported when first asked for, so `import timetravel` stays cheap
    if name == "Recorder":
        from timetravel.capture import Recorder

        return Recorder
    raise AttributeError(f"module 'timetravel' has no attribute {name!r}")
