"""The distribution's layout: the app installs as timetravel.server_app, never as a top-level package."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[1]


def _setuptools_config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_is_listed_in_pyproject():
    listed = set(_setuptools_config()["packages"])
    found = set(find_packages(str(ROOT), include=["timetravel", "timetravel.*"]))
    assert found - listed == set(), "add these packages to [tool.setuptools] packages in pyproject.toml"
    assert listed - found == {"timetravel.server_app"}
    assert _setuptools_config()["package-dir"] == {"timetravel.server_app": "server_app"}


def test_no_app_module_shadows_the_standard_library():
    """Bokeh puts the app folder first on sys.path while it runs main.py."""
    names = {p.stem for p in (ROOT / "server_app").glob("*.py")}
    assert names & set(sys.stdlib_module_names) == set()


@pytest.mark.slow
def test_a_regular_install_finds_the_app(tmp_path):
    """A wheel (what `pip install .` installs) holds timetravel/server_app with its assets, and no server_app/."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path / "dist"), str(ROOT)], check=True, cwd=tmp_path)  # fmt: skip
    wheel = next((tmp_path / "dist").glob("timetravel-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert not any(n.startswith("server_app/") for n in names)
    for name in ("main.py", "app_hooks.py", "assets/app.css", "assets/raster.js", "assets/keys.js"):
        assert f"timetravel/server_app/{name}" in names, name
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True)  # fmt: skip
    code = "from timetravel.commands.serve import app_directory; print(app_directory())"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=tmp_path,
                         env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}).stdout.strip()  # fmt: skip
    assert Path(out) == target / "timetravel" / "server_app"
    assert (Path(out) / "assets" / "app.css").exists()
