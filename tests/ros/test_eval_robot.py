"""dp-eval against a robot it did not start: a sim_node started by the test, driven through the
episode protocol only (docs/episode_protocol.md); the graph check naming what a checkpoint
misses; the operator mode with injected answers. One policy_node (the bundled checkpoint, sim
time), started by the fixture too, serves the runs (`--policy-node`): starting one per run is
dp-eval's default path, covered by tests/e2e/test_closed_loop.py."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from std_srvs.srv import Trigger

from diffusion_policy_node.eval import evaluate
from diffusion_policy_node.eval.evaluate import bundled_checkpoint
from tests.factories import tiny_checkpoint, tiny_config

from .policy_node_harness import NodeProcess, Probe

pytestmark = pytest.mark.ros

ROBOT = "robot_under_test"
POLICY = "eval_test_policy"


@pytest.fixture(scope="module")
def robot(tmp_path_factory: pytest.TempPathFactory):
    """A sim_node as a robot that keeps publishing between episodes (not paused), and a
    policy_node on its clock, inactive until dp-eval starts it."""
    logs = tmp_path_factory.mktemp("robot")
    sim = NodeProcess(
        "diffusion_policy_node.ros.sim_node",
        ["-r", f"__node:={ROBOT}", "-p", "time_limit:=3.0", "-p", "seed:=5"],
        logs / "sim.log",
    )
    policy = NodeProcess(
        "diffusion_policy_node.ros.policy_node",
        ["-r", f"__node:={POLICY}", "-p", f"checkpoint:={bundled_checkpoint()}",
         "-p", "use_sim_time:=true", "-p", "start_active:=false",
         "-p", "inference_process:=false", "-p", "torch_threads:=1", "-p", "warmup_runs:=1",
         "-p", "robot_description_topic:=''"],  # no URDF wait: demonstrated limits
        logs / "policy.log",
    )  # fmt: skip
    probe = Probe("eval_robot_probe")
    try:
        probe.wait_for(lambda: probe.node.count_publishers("/joint_states") > 0, 90, "the sim")
        # The node answers its services once configured (loaded and warmed up).
        assert probe.call(Trigger, f"/{POLICY}/status", Trigger.Request(), timeout=120).success
        yield sim
    finally:
        probe.close()
        policy.stop()
        sim.stop()
    for log in ("sim.log", "policy.log"):
        assert "Traceback" not in (logs / log).read_text()


def _dp_eval(args: list[str], timeout: float = 150) -> tuple[int, dict, str]:
    run = subprocess.run(
        [sys.executable, "-m", "diffusion_policy_node.eval.evaluate", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return run.returncode, json.loads(run.stdout.strip().splitlines()[-1]), run.stderr


def test_dp_eval_drives_a_running_robot_through_the_protocol(robot, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    rc, summary, err = _dp_eval(
        ["--robot", ROBOT, "--policy-node", POLICY, "--checkpoint", str(bundled_checkpoint()),
         "--episodes", "1", "--seed", "1000", "--video-episodes", "0", "--out", str(out)]
    )  # fmt: skip
    assert rc == 0, err + (out / "logs" / "driver.log").read_text()
    assert summary["mode"] == "robot" and summary["robot"] == ROBOT
    assert summary["episodes"] == 1 and "error" not in summary
    record = json.loads((out / "episodes.jsonl").read_text().splitlines()[0])
    assert record["seed"] == 1000  # the robot declares `seed`: set before its ~/reset
    assert record["outcome"] in ("success", "collision", "timeout")
    assert record["inference_count"] > 0  # the policy ran during the episode
    assert not list((out / "logs").glob("*_node.log"))  # dp-eval started no node
    assert robot.alive()


def _checkpoint(folder: Path, joints: list[str], cameras: list[str]) -> Path:
    return tiny_checkpoint(folder, tiny_config(joints, cameras))


def test_missing_joints_and_topics_are_named(robot, tmp_path: Path) -> None:
    ckpt = _checkpoint(
        tmp_path / "ckpt",
        ["joint1", "joint2", "wrist_roll"],
        ["/camera/image_raw", "/wrist/image"],
    )
    out = tmp_path / "eval"
    rc, summary, err = _dp_eval(
        ["--robot", ROBOT, "--policy-node", POLICY, "--checkpoint", str(ckpt), "--episodes",
         "3", "--graph-timeout", "2", "--out", str(out)],
        timeout=90,
    )  # fmt: skip
    assert rc == 1, err
    assert summary["episodes"] == 0
    assert "['wrist_roll'] not in /joint_states" in summary["error"]
    assert "camera topic /wrist/image: no publisher" in summary["error"]
    assert "/camera/image_raw" not in summary["error"].split("needs")[1]  # it is there
    assert "arm" not in summary["error"]  # the command topic has its controller
    assert robot.alive()


def test_operator_mode_with_injected_answers(robot, tmp_path: Path, capsys) -> None:
    prompts: list[tuple[str, float | None]] = []
    answers = iter(["", None, "maybe", "y", "q"])  # reset, running (time up), success x2, quit

    def ask(text: str, timeout: float | None) -> str | None:
        prompts.append((text, timeout))
        answer = next(answers)
        if answer is None:  # as the terminal does when nobody presses Enter in time
            time.sleep(timeout)
        return answer

    out = tmp_path / "op"
    rc = evaluate.main(
        ["--operator", "--policy-node", POLICY, "--checkpoint", str(bundled_checkpoint()),
         "--episodes", "2", "--time-limit", "1.5", "--video-episodes", "0", "--out", str(out)],
        ask=ask,
    )  # fmt: skip
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0, (out / "logs" / "driver.log").read_text()
    assert summary["mode"] == "operator"
    assert (summary["episodes"], summary["successes"]) == (1, 1)  # then the operator quit
    kinds = [text.split(":")[0] for text, _ in prompts]
    assert kinds == ["episode 0", "episode 0 running", "episode 0", "episode 0", "episode 1"]
    assert "reset the scene" in prompts[0][0] and prompts[0][1] is None
    assert prompts[1][1] == 1.5  # the episode length
    assert "success? [y/n]" in prompts[2][0] and prompts[3][0] == prompts[2][0]  # re-asked
    record = json.loads((out / "episodes.jsonl").read_text().splitlines()[0])
    assert record["judged_by"] == "operator" and record["success"] is True
