"""A run's ranking, reasons and features as small tables that notebooks display well.

:func:`ranking_table` and :func:`features_table` read what ``timetravel
detect`` wrote (``RUN/features/``) and return a :class:`Table`: named columns
of equal length that Jupyter shows as an HTML table (``_repr_html_``), a
terminal as aligned text, and pandas as a ``DataFrame`` (:meth:`Table.to_pandas`;
pandas is optional).
"""

from __future__ import annotations

import html
import os
from typing import Any, Mapping, Sequence

import numpy as np

from timetravel.errors import TimetravelError

_SHOWN_ROWS = 20  # rows drawn by the HTML and text views; the table itself holds all of them
_CSS = (
    "<style>.tt-table td,.tt-table th{text-align:left;vertical-align:top;padding:2px 8px}"
    ".tt-table td.tt-num{text-align:right;font-variant-numeric:tabular-nums}"
    ".tt-table ul{margin:0;padding-left:16px}</style>"
)


class Table:
    """Named columns of equal length: a ranking, a feature table.

    Parameters
    ----------
    columns : mapping of str to sequence
        Column name to values (arrays or lists; a list of lists, e.g. reasons,
        is one column whose cells are lists).
    title : str, optional
        A caption shown above the HTML and text views.

    Examples
    --------
    >>> t = Table({"sample": [4, 1], "score": [0.9, 0.2]}, title="ranking")
    >>> len(t), t.columns, t["sample"].tolist()
    (2, ['sample', 'score'], [4, 1])
    >>> print(t)
    ranking
    sample  score
         4  0.900
         1  0.200
    """

    def __init__(self, columns: Mapping[str, Sequence[Any]], *, title: str = "") -> None:
        self._columns = {str(k): v if isinstance(v, np.ndarray) else list(v) for k, v in columns.items()}
        lengths = {k: len(v) for k, v in self._columns.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"columns must have equal lengths, got {lengths}")
        self.title = title

    @property
    def columns(self) -> list[str]:
        """The column names, in order."""
        return list(self._columns)

    def __len__(self) -> int:
        return len(next(iter(self._columns.values()), ()))

    def __getitem__(self, name: str) -> np.ndarray | list:
        try:
            return self._columns[name]
        except KeyError:
            raise KeyError(f"no column {name!r}; the table has {', '.join(self._columns)}") from None

    def head(self, n: int = 5) -> Table:
        """The first ``n`` rows."""
        return Table({k: v[:n] for k, v in self._columns.items()}, title=self.title)

    def to_dicts(self) -> list[dict[str, Any]]:
        """One dict per row, with plain Python values (ready for ``json.dumps``)."""
        plain = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in self._columns.items()}
        return [dict(zip(plain, row)) for row in zip(*plain.values())]

    def to_pandas(self):
        """The table as a ``pandas.DataFrame`` (list cells stay lists).

        Raises
        ------
        TimetravelError
            pandas is not installed.
        """
        try:
            import pandas as pd
        except ImportError:
            raise TimetravelError("to_pandas() needs pandas, which is not installed: pip install pandas") from None
        return pd.DataFrame({k: list(v) if not isinstance(v, np.ndarray) else v for k, v in self._columns.items()})

    def _cells(self, rows: int) -> list[list[str]]:
        return [[_format(self._columns[k][i]) for k in self._columns] for i in range(min(rows, len(self)))]

    def _more(self) -> str:
        hidden = len(self) - _SHOWN_ROWS
        return f"... {hidden} more rows ({len(self)} in all)" if hidden > 0 else ""

    def _repr_html_(self) -> str:
        numeric = [isinstance(v, np.ndarray) and v.dtype.kind in "iuf" for v in self._columns.values()]
        head = "".join(f"<th>{html.escape(k)}</th>" for k in self._columns)
        body = []
        for i in range(min(_SHOWN_ROWS, len(self))):
            cells = []
            for (name, values), is_num in zip(self._columns.items(), numeric):
                value = values[i]
                content = (
                    "<ul>" + "".join(f"<li>{html.escape(str(v))}</li>" for v in value) + "</ul>"
                    if isinstance(value, (list, tuple)) else html.escape(_format(value))
                )
                cells.append(f"<td class='tt-num'>{content}</td>" if is_num else f"<td>{content}</td>")
            body.append("<tr>" + "".join(cells) + "</tr>")
        caption = f"<caption>{html.escape(self.title)}</caption>" if self.title else ""
        more = f"<p>{html.escape(self._more())}</p>" if self._more() else ""
        return (f"{_CSS}<table class='tt-table'>{caption}<thead><tr>{head}</tr></thead>"
                f"<tbody>{''.join(body)}</tbody></table>{more}")

    def __repr__(self) -> str:
        cells = [self.columns, *self._cells(_SHOWN_ROWS)]
        widths = [max(len(row[j]) for row in cells) for j in range(len(self.columns))]
        numeric = [isinstance(v, np.ndarray) and v.dtype.kind in "iuf" for v in self._columns.values()]
        lines = [
            "  ".join(c.rjust(w) if num and r else c.ljust(w) for c, w, num in zip(row, widths, numeric)).rstrip()
            for r, row in enumerate(cells)
        ]
        return "\n".join(([self.title] if self.title else []) + lines + ([self._more()] if self._more() else []))


def _format(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "; ".join(str(v) for v in value)
    if isinstance(value, (float, np.floating)):
        return f"{value:.3f}"
    return str(value)


def _open(run: Any):
    """``(store, detection)`` of a run given as a path or a :class:`~timetravel.store.RunStore`."""
    from timetravel import load_detection
    from timetravel.store import RunStore

    store = run if isinstance(run, RunStore) else RunStore(os.fspath(run), verify="headers")
    return store, load_detection(store)


def ranking_table(run: Any, *, top: int | None = 20) -> Table:
    """The most suspicious samples of a run, with their reasons.

    Parameters
    ----------
    run : path-like or RunStore
        A run on which ``timetravel detect`` (or :func:`timetravel.detect`) has run.
    top : int or None, default=20
        How many samples; ``None`` for all of them.

    Returns
    -------
    Table
        Columns ``rank``, ``sample`` (index into the training set), ``score``
        (higher = more suspicious), ``label`` (given), ``suggested`` (the most
        likely other class), ``predicted`` (at the last epoch) and ``reasons``
        (a list of sentences per sample).

    Raises
    ------
    StoreError
        ``run`` is not a run, or has no ranking yet (the message says to run ``timetravel detect``).
    """
    if top is not None and (isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 0):
        raise TimetravelError(f"top must be a non-negative integer or None, got {top!r}")
    store, detection = _open(run)
    order = detection.ranking()[:top]
    names = np.asarray(store.class_names, dtype=object)
    feats = detection.features
    return Table(
        {
            "rank": np.arange(1, len(order) + 1),
            "sample": order,
            "score": detection.scores[order].astype(np.float64),
            "label": names[feats.labels[order]].tolist(),
            "suggested": names[feats.suggested[order]].tolist(),
            "predicted": names[feats.predicted[order]].tolist(),
            "reasons": [detection.detector.reasons(int(i)) for i in order],
        },
        title=f"{store.path.name}: the {len(order)} most suspicious of {store.n_samples} samples",
    )


def features_table(run: Any) -> Table:
    """Every training sample's features, its label and its suspicion score, in sample order.

    Parameters
    ----------
    run : path-like or RunStore
        A run on which ``timetravel detect`` has run.

    Returns
    -------
    Table
        Columns ``sample``, ``label``, ``score``, then one column per feature
        (``FeatureTable.names``; each feature's meaning is in ``FeatureTable.descriptions``).
    """
    store, detection = _open(run)
    feats = detection.features
    names = np.asarray(store.class_names, dtype=object)
    columns: dict[str, Any] = {
        "sample": np.arange(feats.n_samples),
        "label": names[feats.labels].tolist(),
        "score": detection.scores.astype(np.float64),
    }
    columns.update({name: feats.values[:, j].astype(np.float64) for j, name in enumerate(feats.names)})
    return Table(columns, title=f"{store.path.name}: {len(feats.names)} features of {feats.n_samples} samples")
