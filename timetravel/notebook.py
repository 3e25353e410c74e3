"""The debugger app inside a Jupyter notebook.

:func:`show` embeds the same Bokeh server app that ``timetravel serve`` runs
in the output cell: Bokeh starts the server on the kernel's own event loop
(``bokeh.io.show`` of an ``Application``), bound to 127.0.0.1, and the cell
loads the app from it. The kernel must keep running while the app is used;
:meth:`NotebookApp.stop` (or restarting the kernel) stops it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from timetravel.errors import TimetravelError

RESOURCES = ("cdn", "inline")


@dataclass
class NotebookApp:
    """The app :func:`show` embedded: where its server listens, and how to stop it.

    Attributes
    ----------
    run : str
        The run directory shown.
    url : str
        The embedded server's address (``http://127.0.0.1:PORT/``); a browser
        tab on it opens the same app full-page.
    server : bokeh.server.server.Server
    """

    run: str
    url: str
    server: Any
    _server_id: str

    def stop(self) -> None:
        """Close the app's sessions and stop its server (the output cell goes blank on the next reload)."""
        from bokeh.io.notebook import destroy_server

        destroy_server(self._server_id)

    def __repr__(self) -> str:
        return f"timetravel app for {self.run} at {self.url} (.stop() stops it)"


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def show(
    run: Any,
    *,
    notebook_url: str = "localhost:8888",
    renderer: str = "auto",
    resources: str = "cdn",
    port: int = 0,
) -> NotebookApp:
    """Open the debugger app for a run in the current Jupyter output cell.

    Parameters
    ----------
    run : path-like or RunStore
        The run to show (it needs ``timetravel project`` and ``timetravel
        detect`` results for the canvas and the ranking; without them the app
        says what to run).
    notebook_url : str, default="localhost:8888"
        ``host:port`` of the notebook page in the browser (the app's server
        accepts connections from that page only). Under JupyterHub, Bokeh's
        ``JUPYTER_BOKEH_EXTERNAL_URL`` overrides it.
    renderer : {"auto", "webgl", "canvas", "raster"}, default="auto"
        How the browser draws the dots (``timetravel serve --renderer``).
    resources : {"cdn", "inline"}, default="cdn"
        Where the notebook loads BokehJS from: Bokeh's CDN, or inlined into the
        notebook (works offline; adds about 2 MB to the notebook).
    port : int, default=0
        Port of the app's server on 127.0.0.1; 0 picks a free one.

    Returns
    -------
    NotebookApp
        Its ``url`` and ``stop()``.

    Raises
    ------
    TimetravelError
        Not inside a Jupyter kernel (use ``timetravel serve RUN``), a bad
        option, or ``run`` is not a run store.

    Examples
    --------
    >>> import timetravel  # doctest: +SKIP
    >>> app = timetravel.show("runs/demo")  # doctest: +SKIP
    """
    from timetravel.commands.serve import RENDERERS
    from timetravel.store import RunStore

    if renderer not in RENDERERS:
        raise TimetravelError(f"renderer must be one of {', '.join(RENDERERS)}, got {renderer!r}")
    if resources not in RESOURCES:
        raise TimetravelError(f"resources must be one of {', '.join(RESOURCES)}, got {resources!r}")
    if not _in_kernel():
        raise TimetravelError(
            "timetravel.show() embeds the app in a Jupyter notebook; outside one, run `timetravel serve RUN`"
        )
    store = run if isinstance(run, RunStore) else RunStore(os.fspath(run), verify="headers")
    return _embed(str(store.path), notebook_url, renderer, resources, port)


def _embed(run: str, notebook_url: str, renderer: str, resources: str, port: int) -> NotebookApp:
    from bokeh.io import output_notebook
    from bokeh.io import show as bokeh_show
    from bokeh.io.state import curstate
    from bokeh.resources import CDN, INLINE

    from timetravel.commands.serve import MAX_MESSAGE_BYTES, make_application

    origin = notebook_url.split("//", 1)[-1].rstrip("/")

    def urls(server_port: int | None) -> str:
        # Bokeh asks for the page's origin (None) and then for the app's URL; the app stays on 127.0.0.1
        if server_port is None:
            return origin
        return f"http://127.0.0.1:{server_port}/"

    app = make_application(run, renderer)
    output_notebook(resources=INLINE if resources == "inline" else CDN, hide_banner=True)
    before = set(curstate().uuid_to_server)
    bokeh_show(app, notebook_url=urls, address="127.0.0.1", port=port, websocket_max_message_size=MAX_MESSAGE_BYTES)
    (server_id,) = set(curstate().uuid_to_server) - before
    server = curstate().uuid_to_server[server_id]
    return NotebookApp(run, f"http://127.0.0.1:{server.port}/", server, server_id)
