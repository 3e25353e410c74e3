"""`timetravel serve`: the Bokeh server around the app (no browser needed)."""

from __future__ import annotations

import urllib.request

import pytest

from timetravel.server_app._testing import serve, write_synthetic_run
from timetravel.cli import main as cli
from timetravel.commands.serve import app_directory, make_server, url_of


def test_app_directory_is_the_installed_server_app():
    assert (app_directory() / "main.py").exists()


def test_serve_refuses_a_missing_run(tmp_path, capsys):
    assert cli(["serve", str(tmp_path / "missing"), "--no-browser"]) == 2
    assert "no such run directory" in capsys.readouterr().err


def test_server_binds_localhost_by_default(tmp_path):
    run = write_synthetic_run(tmp_path / "run", n_samples=30, n_epochs=2, grid=4)
    server = make_server(str(run), port=0)
    try:
        assert server.address == "127.0.0.1"
        assert url_of(server) == f"http://127.0.0.1:{server.port}/"
    finally:
        server.stop()


@pytest.mark.parametrize("args, message", [
    (["--port", "99999"], "--port 99999 is not a port: give 0..65535"),
    (["--port", "-1"], "--port -1 is not a port"),
    (["--host", "8.8.8.8"], "cannot listen on 8.8.8.8:5006: not an address of this machine"),
    (["--host", "nope.invalid"], "--host nope.invalid: not an address or a known host name"),
    (["--port", "IN_USE"], "the port is in use (another server?); pick another --port, or 0 for a free one"),
])
def test_serve_bad_address_is_one_line_naming_it(tmp_path, capsys, args, message):
    import socket

    run = write_synthetic_run(tmp_path / "run", n_samples=30, n_epochs=2, grid=4)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        args = [str(taken.getsockname()[1]) if a == "IN_USE" else a for a in args]
        assert cli(["serve", str(run), "--no-browser", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_unknown_renderer_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli(["serve", str(tmp_path), "--renderer", "opengl"])
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.slow
def test_serve_subprocess_prints_its_url_and_serves_the_page(tmp_path):
    run = write_synthetic_run(tmp_path / "run", n_samples=30, n_epochs=2, grid=4)
    with serve(run) as server:
        assert server.url.startswith("http://127.0.0.1:")
        page = urllib.request.urlopen(server.url, timeout=30).read().decode()
        assert "timetravel" in page and "bokeh" in page.lower()
    assert server.proc.returncode == 0
    assert "timetravel app stopped" in server.output
    assert "Traceback" not in server.output and "Error" not in server.output, server.output  # shutdown hooks too


def _loaded_context(server):
    """Run the server's loop until app_hooks.on_server_loaded has attached the app context."""
    from timetravel.server_app.context import context_of

    app_context = server._tornado._applications["/"]
    deadline = server.io_loop.time() + 30

    async def wait():
        import asyncio

        while getattr(app_context.server_context, "timetravel", None) is None and server.io_loop.time() < deadline:
            await asyncio.sleep(0.02)

    server.io_loop.run_sync(wait)
    return context_of(app_context.server_context)


@pytest.mark.parametrize("launcher", ["timetravel serve", "bokeh serve"])
def test_server_start_opens_and_warms_the_run(tmp_path, launcher):
    """app_hooks.py warms the run however the server was started, before any page is requested."""
    from bokeh.application import Application
    from bokeh.application.handlers import DirectoryHandler
    from bokeh.server.server import Server

    run = write_synthetic_run(tmp_path / "run", n_samples=30, n_epochs=3, grid=4)
    if launcher == "timetravel serve":
        server = make_server(str(run), port=0)
    else:  # what `bokeh serve server_app --args RUN` builds
        handler = DirectoryHandler(filename=str(app_directory()), argv=[str(run)])
        server = Server({"/": Application(handler)}, port=0, address="127.0.0.1")
        server.start()
    try:
        context = _loaded_context(server)
        assert context.args.run == str(run)
        data, review = context.open()
        assert data.cached_epochs() == [2]  # the last projected epoch, loaded at start
        assert review.snapshot().status in ("loading", "ready", "missing")
    finally:
        server.stop()


@pytest.mark.slow
def test_bokeh_serve_of_the_app_directory_serves_the_app(tmp_path):
    """`bokeh serve server_app --args RUN` needs nothing from the timetravel command line."""
    import re
    import subprocess
    import sys
    import time

    run = write_synthetic_run(tmp_path / "run", n_samples=30, n_epochs=2, grid=4)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bokeh", "serve", str(app_directory()), "--port", "0", "--args", str(run)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        lines, url, deadline = [], None, time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            match = re.search(r"Bokeh app running at: (http://\S+)", line)
            url = match.group(1) if match else None
        assert url, "".join(lines)
        page = urllib.request.urlopen(url, timeout=30).read().decode()
        assert "<title>timetravel: synthetic-app-30</title>" in page  # the run's app, not a message page
    finally:
        proc.terminate()
        proc.wait(timeout=30)
