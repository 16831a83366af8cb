"""`colcon build --symlink-install` of the package in a scratch workspace (ament_python layout)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def _project_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    return [f for f in out if f and not f.startswith("ros2_ws/") and (REPO / f).is_file()]


@pytest.fixture(scope="module")
def built_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("colcon", path=str(VENV_BIN)) is None:
        pytest.fail(f"colcon not found in {VENV_BIN}: run `make setup`")
    root = tmp_path_factory.mktemp("colcon") / "repo"
    for rel in _project_files():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, root / rel)
    # Same shape as the repo's ros2_ws: src/ links back to the package root.
    ws = root / "ros2_ws"
    (ws / "src").mkdir(parents=True)
    os.symlink("../..", ws / "src" / "diffusion_policy_node")
    env = dict(os.environ, PATH=f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run(
        ["colcon", "build", "--symlink-install", "--event-handlers", "console_direct-"],
        cwd=ws,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return ws / "install" / "diffusion_policy_node"


def test_executables_installed_for_ros2_run(built_workspace: Path) -> None:
    lib = built_workspace / "lib" / "diffusion_policy_node"
    for exe in ("ros_selftest", "dp-info", "sim_node", "recorder_node"):
        assert os.access(lib / exe, os.X_OK), f"{lib / exe} missing or not executable"
    proc = subprocess.run(
        [str(lib / "ros_selftest"), "--help"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "talk" in proc.stdout
    # The test tools (ros/testing/) keep their executable names; --help says what they are.
    for exe in ("fake_sensors", "jtc_consumer"):
        proc = subprocess.run(
            [str(lib / exe), "--help"], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith(f"usage: {exe}") and "test tool" in proc.stdout


def test_share_holds_manifest_launch_and_config(built_workspace: Path) -> None:
    share = built_workspace / "share" / "diffusion_policy_node"
    assert (share / "package.xml").read_text().count("<name>diffusion_policy_node</name>") == 1
    assert sorted(p.name for p in (share / "launch").iterdir())
    assert (share / "launch" / "selftest.launch.py").is_file()
    assert any((share / "config").rglob("*.yaml"))
    marker = built_workspace / "share" / "ament_index" / "resource_index" / "packages"
    assert (marker / "diffusion_policy_node").exists()


def test_workspace_setup_bash_is_written_and_sources(built_workspace: Path) -> None:
    """README: `colcon build` then `source install/setup.bash` (needs colcon-bash; colcon-core
    alone writes only setup.sh). Sourcing it puts the package on the ament index."""
    install = built_workspace.parent
    assert (install / "setup.bash").is_file(), sorted(p.name for p in install.iterdir())
    script = (
        "set -e; source install/setup.bash; "
        "python -c 'from ament_index_python.packages import get_package_prefix as p; "
        'print(p("diffusion_policy_node"))\''
    )
    env = dict(os.environ, PATH=f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}")
    env.pop("AMENT_PREFIX_PATH", None)
    proc = subprocess.run(
        ["bash", "-c", script],
        cwd=install.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip().splitlines()[-1]) == built_workspace
