"""A new robot end to end over DDS: a 7-joint arm + a 1-joint gripper on their own controllers
(fake_arm_gripper.py: two cameras, /joint_states, URDF on /robot_description).

recorder_node records two teleoperated episodes -> dp-config writes the training config ->
dp-train trains it as written (a tiny model and few steps by --set) -> policy_node publishes
each action group only to its own controller, within the URDF limits, with clamps counted
per joint, and its parameters read back with their effective values (list/get_parameters, what
`ros2 param dump` uses).

Parametrized over the gripper's controller: a second joint_trajectory_controller, or a forward
position controller (std_msgs/Float64MultiArray) whose commands were recorded too.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from rcl_interfaces.srv import GetParameters, ListParameters
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory

from .fake_arm_gripper import (
    ARM,
    ARM_TOPIC,
    CAMERAS,
    GRIPPER,
    GRIPPER_LIMIT,
    GRIPPER_TOPIC,
    LOWER,
    UPPER,
)
from .policy_node_harness import NodeProcess, Probe

pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parents[2]
EPISODE_S = 3.5
TINY = [
    "policy.down_dims=[16, 32]",
    "policy.encoder_width=16",
    "policy.num_keypoints=8",
    "policy.diffusion_step_embed_dim=16",
    "policy.crop_shape=[36, 36]",
    "policy.num_inference_steps=3",
    "data.image_size=[40, 40]",
    "train.steps=30",
    "train.batch_size=8",
    "train.val_fraction=0.0",
    "train.checkpoint_every=30",
    "train.torch_threads=1",
]


def _robot(tmp: Path, gripper_type: str, teleop: bool) -> subprocess.Popen:
    config = tmp / f"robot_{teleop}.json"
    config.write_text(json.dumps({"gripper_type": gripper_type, "teleop": teleop}))
    log = open(tmp / f"robot_{teleop}.log", "w")  # noqa: SIM115
    return subprocess.Popen(
        [sys.executable, "-m", "tests.ros.fake_arm_gripper", str(config)],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(2)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _record(tmp: Path, probe: Probe, gripper_type: str) -> Path:
    robot = _robot(tmp, gripper_type, teleop=True)
    out = tmp / "bags"
    topics = [*CAMERAS, "/joint_states", ARM_TOPIC, GRIPPER_TOPIC[gripper_type]]
    recorder = NodeProcess(
        "diffusion_policy_node.ros.recorder_node",
        ["-r", "__node:=rec", "-p", f"topics:={json.dumps(topics)}", "-p", f"output_dir:={out}"],
        tmp / "recorder.log",
    )
    try:
        for _ in range(2):
            deadline = time.monotonic() + 30
            while True:  # ~/start refuses until every topic has a publisher
                resp = probe.trigger("/rec/start")
                if resp.success or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert resp.success, f"{resp.message}\n{recorder.log()}"
            time.sleep(EPISODE_S)
            assert probe.trigger("/rec/stop").success
    finally:
        assert recorder.stop() == 0, recorder.log()
        _stop(robot)
    return out


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO
    )
    assert proc.returncode == 0, f"{args}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _parameters(probe: Probe, node: str) -> dict[str, object]:
    names = probe.call(ListParameters, f"/{node}/list_parameters", ListParameters.Request())
    req = GetParameters.Request()
    req.names = list(names.result.names)
    values = probe.call(GetParameters, f"/{node}/get_parameters", req).values
    out: dict[str, object] = {}
    for name, v in zip(req.names, values, strict=True):
        out[name] = {
            1: v.bool_value,
            2: v.integer_value,
            3: v.double_value,
            4: v.string_value,
            8: list(v.double_array_value),
            9: list(v.string_array_value),
        }.get(v.type, None if v.type == 0 else "other")
    return out


@pytest.mark.parametrize("gripper_type", ["JointTrajectory", "Float64MultiArray"])
def test_new_robot_record_config_train_and_run(tmp_path: Path, gripper_type: str) -> None:
    probe = Probe("action_groups_probe")
    try:
        bags = _record(tmp_path, probe, gripper_type)
        cfg = tmp_path / "my_robot.yaml"
        _cli("diffusion_policy_node.train.robot_config", str(bags), "--out", str(cfg))
        data = yaml.safe_load(cfg.read_text())["data"]
        groups = {g["name"]: g for g in data["action_groups"]}
        assert groups["arm"]["joints"] == ARM and groups["arm"]["topic"] == ARM_TOPIC
        assert groups["gripper"]["joints"] == [GRIPPER]
        assert groups["gripper"]["type"] == gripper_type
        assert data["camera_topics"] == sorted(CAMERAS)
        sets = [a for s in TINY for a in ("--set", s)]
        _cli(
            "diffusion_policy_node.train.cli", "--config", str(cfg), "--data", str(bags),
            "--out", str(tmp_path / "run"), "--quiet", *sets,
        )  # fmt: skip
        ckpt = tmp_path / "run" / "latest"

        received: dict[str, list] = {ARM_TOPIC: [], GRIPPER_TOPIC[gripper_type]: []}
        probe.subscribe(ARM_TOPIC, JointTrajectory, received[ARM_TOPIC].append)
        gtopic = GRIPPER_TOPIC[gripper_type]
        gtype = JointTrajectory if gripper_type == "JointTrajectory" else Float64MultiArray
        probe.subscribe(gtopic, gtype, received[gtopic].append)
        robot = _robot(tmp_path, gripper_type, teleop=False)
        node = NodeProcess(
            "diffusion_policy_node.ros.policy_node",
            # the robot process may take seconds to publish its latched URDF: wait for it
            [
                "-r",
                "__node:=pn_groups",
                "-p",
                f"checkpoint:={ckpt}",
                "-p",
                "max_obs_age:=1.0",
                "-p",
                "robot_description_timeout:=30.0",
            ],
            tmp_path / "policy_node.log",
        )
        try:
            probe.wait_for(
                lambda: len(received[ARM_TOPIC]) >= 3 and len(received[gtopic]) >= 3,
                timeout=120,
                what=f"commands on both groups' topics\n{node.log()}",
            )
            status = json.loads(probe.trigger("/pn_groups/status").message)
            params = _parameters(probe, "pn_groups")
        finally:
            code = node.stop()
            _stop(robot)
        assert code == 0, node.log()
        log = node.log()
        assert "position from urdf" in log and "topic /robot_description" in log

        # each group only on its own controller's topic, every point within the URDF limits
        arm = [m for m in received[ARM_TOPIC] if m.points]
        assert arm and all(list(m.joint_names) == ARM for m in arm)
        pts = np.array([p.positions for m in arm for p in m.points])
        assert np.all(pts >= np.array(LOWER) - 1e-9) and np.all(pts <= np.array(UPPER) + 1e-9)
        lo, hi, _ = GRIPPER_LIMIT
        if gripper_type == "JointTrajectory":
            grip = [m for m in received[gtopic] if m.points]
            assert all(list(m.joint_names) == [GRIPPER] for m in grip)
            gvals = np.array([p.positions[0] for m in grip for p in m.points])
        else:
            assert all(len(m.data) == 1 for m in received[gtopic])
            gvals = np.array([m.data[0] for m in received[gtopic]])
        assert np.all(gvals >= lo - 1e-9) and np.all(gvals <= hi + 1e-9)

        # arm_joint_1's URDF range (±0.3) is narrower than the demonstrated ±0.6: clamped, and
        # counted for that joint; the others' URDF ranges hold the demonstrations
        assert status[f"position_clamps[{ARM[0]}]"] > 0
        assert all(status[f"position_clamps[{j}]"] == 0 for j in ARM[1:])
        assert set(status["output_subscribers"]) == {ARM_TOPIC, gtopic}

        # parameters read back with their effective values (what `ros2 param dump` prints)
        assert params["joint_names"] == [*ARM, GRIPPER]
        assert params["output_topics"] == [ARM_TOPIC, gtopic]
        assert params["camera_topics"] == sorted(CAMERAS)
        assert params["control_rate_hz"] == pytest.approx(10.0)
        assert params["joint_upper_limits"][:7] == pytest.approx(UPPER)
        assert params["joint_upper_limits"][7] == pytest.approx(hi)
        # `precision: auto` shows what it resolved to, the same as ~/status
        assert (
            params["precision"] in ("fp32", "bf16", "bf16-encoder")
            and params["precision"] == status["precision"]
        )
        assert all(v is not None for v in params.values()), params
    finally:
        probe.close()
