"""`dp-collect --robot NODE --expert-cmd CMD`: the episode protocol around a robot that
dp-collect does not start (sim_node standing in for the user's robot, no expert of its own) and a
user's expert process (tests/ros/line_expert.py) started per episode and stopped with SIGINT;
recorder_node records what the expert commands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from diffusion_policy_node.data.bag_reader import find_bags, read_bag
from diffusion_policy_node.data.config import load_data_config
from diffusion_policy_node.eval.processes import start_node, stop_node
from diffusion_policy_node.sim.arm_task import HOME_QPOS

pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parents[2]
TOPICS = ["/camera/image_raw", "/joint_states", "/arm_controller/joint_trajectory"]


def test_collect_on_a_robot_with_a_users_expert(tmp_path: Path) -> None:
    robot = start_node(
        "sim_node",
        ["-r", "__node:=my_robot", "-p", "time_limit:=2.5", "-p", "real_time_factor:=1.0",
         "-p", "camera_rate_hz:=10.0"],
        tmp_path / "robot.log",
    )  # fmt: skip
    out = tmp_path / "demos"
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "diffusion_policy_node.eval.collect",
             "--robot", "my_robot", "--sim-time", "--keep-failed",
             "--expert-cmd", f"{sys.executable} -m tests.ros.line_expert --seed {{seed}} "
             f"--hold {HOME_QPOS[1]} {HOME_QPOS[2]}",
             "--topics", *TOPICS, "--episodes", "2", "--seed", "5", "--out", str(out),
             "--timeout", "60"],
            capture_output=True, text=True, timeout=240, cwd=REPO,
        )  # fmt: skip
    finally:
        stop_node(robot)
    logs = "".join(p.read_text() for p in sorted((out / "logs").glob("*.log")))
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}\n{logs[-4000:]}"
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["episodes"] == 2 and summary["robot"] == "my_robot"
    records = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert [r["seed"] for r in records] == [5, 6]
    assert [r["expert_rc"] for r in records] == [0, 0]  # stopped by SIGINT, exited cleanly
    for r in records:
        text = (out / "logs" / f"expert_{r['episode']:04d}.log").read_text()
        assert f"line_expert seed {r['seed']} env" in text and "'DP_ROBOT': 'my_robot'" in text
        assert "line_expert: stopped" in text
        # Nothing the expert sent after ~/unpause is lost: dp-collect waits until the recorder
        # is connected to the expert's new publisher (10 Hz over the 2.5 s episode).
        assert r["messages"]["/arm_controller/joint_trajectory"] >= 20
    # The bags (a 2.5 s time limit: timeouts, kept in failed/) hold the expert's commands.
    bags = find_bags([out / "failed"])
    assert len(bags) == 2
    config = load_data_config(REPO / "config" / "robots" / "sim_arm" / "data.yaml")
    config.horizon, config.n_action_steps = 4, 2
    for bag in bags:
        (episode,) = read_bag(bag, config).episodes
        assert episode.action[:, 0].max() > 0.1  # joint1 driven by the expert
