"""The install respects the user's torch: a range in pyproject, torch==2.13.0 installed first by the README.

A venv that already has torch (here a CUDA build of another release, as a
user's would be) installs timetravel without pip touching torch. Checked with
``pip install --dry-run --report`` and ``--no-index``: nothing is downloaded,
so the test runs offline.
"""

from __future__ import annotations

import json
import re
import site
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _torch_requirement() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(d for d in deps if re.match(r"torch\b", d))


def test_pyproject_asks_for_a_torch_range_not_a_pin():
    requirement = _torch_requirement().replace(" ", "")
    assert requirement.startswith("torch>=") and "==" not in requirement


def test_readme_and_ci_install_the_cpu_torch_first():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^python3 -m venv .*$", readme, flags=re.M)
    assert len(commands) == 2
    for command in commands:
        assert "pip install torch==2.13.0 && pip install -e " in command, command
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[1] in ci, ".ci/run must run the README's test command verbatim"


def _fake_torch(site_dir: Path, version: str) -> None:
    """An installed torch distribution as pip sees it (a CUDA build of another release)."""
    info = site_dir / f"torch-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: torch\nVersion: {version}\n")
    (info / "INSTALLER").write_text("pip\n")
    (info / "RECORD").write_text("")


@pytest.mark.slow
def test_a_venv_with_torch_installs_timetravel_without_touching_it(tmp_path):
    env = tmp_path / "venv"
    venv.create(env, with_pip=False)
    python = env / "bin" / "python"
    own_site = Path(subprocess.check_output(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip())
    _fake_torch(own_site, "2.4.1+cu121")
    # everything else (pip, setuptools, numpy, ...) from this interpreter's environment, after the venv's own
    (own_site / "_outer.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    report = tmp_path / "report.json"
    result = subprocess.run(
        [python, "-m", "pip", "install", "--dry-run", "--no-index", "--no-build-isolation", "--quiet", "--report", str(report), "-e", str(ROOT)],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    installs = {item["metadata"]["name"].lower(): item["metadata"]["version"]
                for item in json.loads(report.read_text())["install"]}
    assert installs == {"timetravel": installs["timetravel"]}, f"pip would install {installs}"
    listed = subprocess.check_output([python, "-m", "pip", "list", "--format=json"], text=True)
    assert {"name": "torch", "version": "2.4.1+cu121"} in json.loads(listed)
