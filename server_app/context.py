"""What every session of one server shares: the app's arguments, the opened run and its review.

:mod:`app_hooks` creates one :class:`AppContext` when the server starts (``on_server_loaded``)
and warms it (opens the run, loads the last projected epoch, starts ranking) before the
first page is requested, whether the server was started by ``timetravel serve RUN`` or by
``bokeh serve server_app --args RUN``. Each session's ``main.py`` finds it on its server
context (:func:`context_of`).
"""

from __future__ import annotations

import argparse
import logging
import threading
from dataclasses import dataclass

from timetravel.errors import TimetravelError
from timetravel.server_app.canvas import BACKENDS
from timetravel.server_app.data import RunData
from timetravel.server_app.pool import PoolRanking
from timetravel.server_app.review import Review

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AppArgs:
    """The app's command line: ``RUN [--renderer auto|webgl|canvas|raster] [--compare RUN2]``."""

    run: str | None
    renderer: str = "auto"
    compare: str | None = None


def parse_args(argv: list[str]) -> AppArgs:
    """Parse the app's arguments (``timetravel serve`` passes them; so does ``bokeh serve --args``).

    Raises
    ------
    SystemExit
        Unknown or malformed arguments (argparse prints what is wrong).
    """
    parser = argparse.ArgumentParser(prog="timetravel.server_app", add_help=False)
    parser.add_argument("run", nargs="?")
    parser.add_argument("--renderer", choices=("auto", *BACKENDS), default="auto")
    parser.add_argument("--compare", default=None)
    args = parser.parse_args(argv)
    return AppArgs(run=args.run, renderer=args.renderer, compare=args.compare)


class AppContext:
    """The run and review shared by every session of a server; opened on first use, thread-safe.

    Parameters
    ----------
    argv : list of str
        The app's arguments (see :func:`parse_args`).
    """

    def __init__(self, argv: list[str]) -> None:
        self.args = parse_args(argv)
        self._lock = threading.Lock()
        self._data: RunData | None = None
        self._review: Review | None = None
        self._other: RunData | None = None
        self._pool: PoolRanking | None = None

    def open(self) -> tuple[RunData, Review]:
        """The run and its review (started), opened on the first call and refreshed on later ones.

        A server started before ``timetravel project`` finished picks up the new epochs on
        the next page load.

        Raises
        ------
        TimetravelError
            No run was given, or it cannot be opened (the message says why).
        """
        if not self.args.run:
            raise TimetravelError("no run given: start the app with `timetravel serve RUN`")
        with self._lock:
            if self._data is None:
                data = RunData(self.args.run)
                self._data, self._review = data, Review(data)
            else:
                self._data.refresh()
            data, review = self._data, self._review
        review.start()
        return data, review

    def pool(self) -> PoolRanking | None:
        """The run's pool ranking (fitted on its first ``rank``), shared by every session; None without a pool.

        Raises
        ------
        TimetravelError
            The run cannot be opened.
        """
        data, _ = self.open()
        if not data.store.n_pool:
            return None
        with self._lock:
            if self._pool is None or self._pool.store is not data.store:
                self._pool = PoolRanking(data.store)
            return self._pool

    def open_compared(self) -> RunData:
        """The run named by ``--compare`` (the run itself when it names the same directory), opened once.

        Raises
        ------
        TimetravelError
            It cannot be opened.
        """
        from pathlib import Path

        data, _ = self.open()
        if Path(self.args.compare).resolve() == data.path.resolve():
            return data
        with self._lock:
            if self._other is None:
                self._other = RunData(self.args.compare)
            else:
                self._other.refresh()
            return self._other

    def warm(self) -> None:
        """Open the run, load its last projected epoch, start ranking and read every epoch's predictions.

        A run that cannot be shown is only logged: the page explains it to the user.
        """
        if not self.args.run:
            return
        try:
            data, _ = self.open()
            if data.epochs:
                data.frame(data.epochs[-1])
        except TimetravelError as exc:
            logger.warning("%s", exc)
            return
        data.executor.submit(_read_outcomes, data)

    def close(self) -> None:
        """Stop the run's background work (the server is shutting down)."""
        with self._lock:
            for data in (self._data, self._other):
                if data is not None:
                    data.close()


def _read_outcomes(data: RunData) -> None:
    """Every epoch's predictions and losses, for the group views (read once, off the event loop)."""
    try:
        data.analysis.outcomes()
        if data.store.n_heldout:
            data.analysis.outcomes("heldout")
    except Exception:  # noqa: BLE001 - the group views retry, and report, on first use
        logger.warning("reading the predictions of every epoch failed", exc_info=True)


def context_of(server_context: object) -> AppContext:
    """The :class:`AppContext` that :mod:`app_hooks` attached to a Bokeh server context.

    Raises
    ------
    RuntimeError
        The server did not run ``app_hooks.on_server_loaded`` (the app directory is incomplete).
    """
    context = getattr(server_context, "timetravel", None)
    if not isinstance(context, AppContext):
        raise RuntimeError("the server did not run server_app/app_hooks.py; serve the whole app directory")
    return context
