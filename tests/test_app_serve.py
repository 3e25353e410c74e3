"""`timetravel serve`: the Bokeh server around the app (no browser needed)."""

from __future__ import annotations

import urllib.request

import pytest

from server_app._testing import serve, write_synthetic_run
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
