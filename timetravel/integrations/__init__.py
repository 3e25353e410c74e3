"""Recording from training frameworks: PyTorch Lightning and Hugging Face ``transformers``.

Each integration is a callback added to the user's trainer, plus
:class:`IndexedDataset`, the wrapper that makes every batch carry its
samples' positions in the training set (the rows of the run store)::

    from timetravel.integrations import IndexedDataset
    from timetravel.integrations.lightning import TimetravelCallback          # pip install "timetravel[lightning]"
    from timetravel.integrations.huggingface import TimetravelTrainerCallback  # pip install "timetravel[hf]"

The framework modules import their framework; this package imports neither.
"""

from timetravel.integrations._indexed import IndexedDataset

__all__ = ["IndexedDataset"]
