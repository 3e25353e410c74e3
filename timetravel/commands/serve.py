"""``timetravel serve RUN``: the debugger app (a Bokeh server) for one run, on 127.0.0.1 by default."""

from __future__ import annotations

import argparse

RENDERERS = ("auto", "webgl", "canvas", "raster")  # timetravel.server_app.canvas.BACKENDS (bokeh is slow to import)
MAX_MESSAGE_BYTES = 512 * 2**20  # one epoch of a large run in one websocket message
HELP = "serve the debugger app for a run (Bokeh server, bound to 127.0.0.1 unless --host says otherwise)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="the run directory (holding run.json)")
    parser.add_argument("--port", type=int, default=5006, help="port to listen on; 0 picks a free one (default 5006)")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1, this machine only; the app has no authentication)",
    )
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser tab")
    parser.add_argument("--compare", metavar="RUN2", default=None,
                        help="compare RUN with RUN2 (e.g. the run `timetravel fix` made) side by side on one epoch "
                             "slider; RUN2 = RUN compares two epochs of one run")
    parser.add_argument(
        "--renderer",
        choices=RENDERERS,
        default="auto",
        help="how the browser draws the dots: webgl (GPU), canvas (Bokeh's 2D scatter), raster (the page "
        "rasterises the dots into one image: fastest without a GPU), or auto: webgl unless the browser reports "
        "a software WebGL, then canvas up to 20,000 dots and raster above (default)",
    )


def app_directory():
    """The Bokeh directory app (``server_app/`` of the checkout, installed as ``timetravel.server_app``)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("timetravel.server_app")
    if spec is None or not spec.submodule_search_locations:
        from timetravel.errors import TimetravelError

        raise TimetravelError("timetravel.server_app is not installed; reinstall timetravel (pip install -e .)")
    return Path(list(spec.submodule_search_locations)[0])


def make_application(run_dir: str, renderer: str = "auto", compare: str | None = None):
    """The Bokeh ``Application`` of the app for ``run_dir`` (what ``timetravel serve`` and ``timetravel.show`` serve).

    With ``compare`` (another run of the same samples, or ``run_dir`` itself) the page compares the two.
    """
    from bokeh.application import Application
    from bokeh.application.handlers import DirectoryHandler

    argv = [str(run_dir), "--renderer", renderer, *(["--compare", str(compare)] if compare else [])]
    return Application(DirectoryHandler(filename=str(app_directory()), argv=argv))


def _listen_check(host: str, port: int) -> int:
    """Bind ``host:port`` once (0: a free port) and return the port; an error says what to change.

    Raises
    ------
    TimetravelError
        A port out of range, a host name that does not resolve, an address that is not this
        machine's, or a port already in use.
    """
    import errno
    import socket

    from timetravel.errors import TimetravelError

    if not 0 <= port <= 65535:
        raise TimetravelError(f"--port {port} is not a port: give 0..65535 (0 picks a free one)")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise TimetravelError(f"--host {host}: not an address or a known host name ({exc}); the default "
                              "127.0.0.1 serves this machine only") from None
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will: a closed port is free
        try:
            sock.bind(address)
        except OSError as exc:
            why = {errno.EADDRINUSE: "the port is in use (another server?); pick another --port, or 0 for a free one",
                   errno.EADDRNOTAVAIL: "not an address of this machine; give one of its own (default 127.0.0.1)",
                   errno.EACCES: "no permission to listen there (ports below 1024 need root); pick another --port"}
            raise TimetravelError(f"cannot listen on {host}:{port}: "
                                  f"{why.get(exc.errno, exc.strerror or str(exc))}") from None
        return int(sock.getsockname()[1])


def make_server(run_dir: str, *, port: int = 5006, host: str = "127.0.0.1", renderer: str = "auto",
                compare: str | None = None):
    """A started-but-not-running Bokeh ``Server`` serving the app for ``run_dir`` at ``/``.

    The same directory app as ``bokeh serve server_app --args RUN``: its ``app_hooks.py``
    opens and warms the run when the server's event loop starts.

    Parameters
    ----------
    run_dir : str
        The run directory; it must open as a run store.
    port : int
        Port to listen on; 0 picks a free one.
    host : str
        Address to bind.
    renderer : {"auto", "webgl", "canvas", "raster"}
        How the browser draws the dots (see ``timetravel serve --help``).
    compare : str, optional
        A second run of the same samples (or ``run_dir`` again, for two of its epochs): serve the comparison.

    Returns
    -------
    bokeh.server.server.Server

    Raises
    ------
    StoreError
        ``run_dir`` is not a readable run store.
    TimetravelError
        The server cannot listen on ``host:port`` (the sentence says why and what to change).
    """
    from bokeh.server.server import Server

    from timetravel.store import RunStore

    store = RunStore(run_dir, verify="headers")
    if compare is not None:
        compare = str(RunStore(compare, verify="headers").path)
    port = _listen_check(host, port)
    origins = sorted({f"{host}:{port}", f"localhost:{port}", f"127.0.0.1:{port}"})
    server = Server(
        {"/": make_application(str(store.path), renderer, compare)},
        port=port,
        address=host,
        allow_websocket_origin=origins,
        websocket_max_message_size=MAX_MESSAGE_BYTES,
    )
    server.start()
    return server


def url_of(server) -> str:
    """The URL a browser opens for ``server``."""
    host = server.address or "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{server.port}/"


def run(args: argparse.Namespace) -> int:
    import signal

    server = make_server(args.run, port=args.port, host=args.host, renderer=args.renderer, compare=args.compare)
    url = url_of(server)
    print(f"timetravel app for {args.run} at {url}  (Ctrl+C stops it)", flush=True)
    if not args.no_browser:
        server.io_loop.add_callback(server.show, "/")

    def _stop(*_):
        server.io_loop.add_callback_from_signal(server.io_loop.stop)

    signal.signal(signal.SIGTERM, _stop)
    try:
        server.io_loop.start()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    print("timetravel app stopped", flush=True)
    return 0
