"""The time-travelling canvas: temporally consistent 2D projections, inverse maps, territories, metrics.

Importing this package is cheap: torch, faiss, scipy and joblib are imported
when a projection is computed, and umap-learn only by the benchmark baselines.
"""

from timetravel.projection.store import ProjectionError, Territory
from timetravel.projection.metrics import (
    evaluate_split,
    knn_preservation,
    prediction_preservation,
    reconstruction_error,
    temporal_consistency,
)
from timetravel.projection.model import InverseMap
from timetravel.projection.projector import TemporalProjector, load_inverse_map

__all__ = [
    "InverseMap",
    "ProjectionError",
    "TemporalProjector",
    "Territory",
    "evaluate_split",
    "knn_preservation",
    "load_inverse_map",
    "prediction_preservation",
    "reconstruction_error",
    "temporal_consistency",
]
