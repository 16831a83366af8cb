"""The suite's pytest configuration holds where a ROS 2 install's pytest plugins are installed.

Every ROS 2 desktop install has `launch_testing`, which registers a pytest plugin (entry point
group `pytest11`) whose `pytest_pycollect_makemodule(path, parent)` hook pytest >= 9 rejects:
the whole collection fails. pyproject's addopts disable plugin autoloading for our runs; here a
stand-in distribution with that hook is put on the path of a child pytest.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

HOOKS = """
def pytest_pycollect_makemodule(path, parent):  # launch_testing's signature (py.path era)
    return None
"""


def _fake_launch_testing(site: Path) -> None:
    """An installed-looking `launch_testing` distribution with a pytest11 entry point."""
    package = site / "launch_testing" / "pytest"
    package.mkdir(parents=True)
    (site / "launch_testing" / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "hooks.py").write_text(HOOKS)
    dist_info = site / "launch_testing-1.0.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: launch_testing\nVersion: 1.0.0\n"
    )
    (dist_info / "entry_points.txt").write_text(
        "[pytest11]\nlaunch_testing = launch_testing.pytest.hooks\n"
    )


def _pytest(site: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_DISABLE_PLUGIN_AUTOLOAD"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args,
         "tests/unit/test_layering.py"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_an_installed_launch_testing_plugin_does_not_break_our_run(tmp_path: Path) -> None:
    _fake_launch_testing(tmp_path)
    proc = _pytest(tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "passed" in proc.stdout
    # Without our addopts the stand-in is autoloaded and collection fails as with the real one.
    proc = _pytest(tmp_path, "-o", "addopts=")
    assert proc.returncode != 0
    assert "launch_testing" in proc.stdout + proc.stderr
