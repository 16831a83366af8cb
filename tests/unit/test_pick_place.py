"""The UR5e pick-and-place task, its URDF and its scripted expert (ROS-free)."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

import mujoco
import numpy as np
import pytest
import yaml

from diffusion_policy_node.sim.pick_place import (
    HOME_QPOS,
    HOME_TCP,
    STATE_JOINT_NAMES,
    PickPlaceConfig,
    PickPlaceTask,
)
from diffusion_policy_node.sim.pick_place_expert import (
    GRASP_MODES,
    HOME_ROTATION,
    PickPlaceExpert,
    TcpIk,
    run_pick_place_episode,
    yaw_rotation,
)
from diffusion_policy_node.sim.robot_model import BIN_COLORS, CAMERAS, CUBE_HALF, rpy_matrix
from diffusion_policy_node.sim.ur5e_description import (
    A2,
    A3,
    ARM_JOINTS,
    D1,
    D4,
    D5,
    D6,
    GRIPPER_JOINT,
    GRIPPER_VELOCITY,
    ur5e_gripper_urdf,
)

from .test_launch_files import controller_types, gazebo_controllers

URDF = Path(__file__).resolve().parents[2] / "description" / "urdf" / "ur5e_gripper.urdf"


@pytest.fixture(scope="module")
def task():
    with PickPlaceTask(PickPlaceConfig(image_width=64, image_height=48)) as t:
        yield t


def _seed_with_bin(task: PickPlaceTask, target: str, start: int = 0) -> int:
    for seed in range(start, start + 50):
        task.reset(seed)
        if task.target_bin() == target:
            return seed
    raise AssertionError(f"no seed in [{start}, {start + 50}) selects the {target} bin")


def _place_cube(task: PickPlaceTask, xyz: tuple[float, float, float]) -> None:
    d = task.data
    adr = task._cube_qpos
    d.qpos[adr : adr + 3] = xyz
    d.qpos[adr + 3 : adr + 7] = [1.0, 0.0, 0.0, 0.0]
    d.qvel[task._cube_dof : task._cube_dof + 6] = 0.0
    mujoco.mj_forward(task.model, d)


# ----------------------------------------------------------------------------- description
def test_checked_in_urdf_is_the_generators_output() -> None:
    assert URDF.read_text() == ur5e_gripper_urdf(), (
        "description/urdf/ur5e_gripper.urdf is stale: run python -m "
        "diffusion_policy_node.sim.ur5e_description description/urdf/ur5e_gripper.urdf"
    )


def test_urdf_limits_are_urs_and_equal_mujocos_ranges(task: PickPlaceTask) -> None:
    root = ET.parse(URDF).getroot()
    joints = {j.get("name"): j for j in root.findall("joint")}
    movable = [n for n, j in joints.items() if j.get("type") != "fixed"]
    assert movable == [*ARM_JOINTS, GRIPPER_JOINT, "gripper_right_finger_joint"]
    m = task.model
    for name in [*ARM_JOINTS, GRIPPER_JOINT]:
        limit = joints[name].find("limit")
        lower, upper = float(limit.get("lower")), float(limit.get("upper"))
        jid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, name)
        assert tuple(m.jnt_range[jid]) == (lower, upper), name
        act = mujoco.mj_name2id(
            m,
            mujoco.mjtObj.mjOBJ_ACTUATOR,
            "gripper_servo" if name == GRIPPER_JOINT else f"{name}_servo",
        )
        assert tuple(m.actuator_ctrlrange[act]) == (lower, upper), name
        if name in ARM_JOINTS:
            # ur_description config/ur5e/joint_limits.yaml: +-360 deg (elbow +-180), 180 deg/s.
            expected = math.pi if name == "elbow_joint" else 2 * math.pi
            assert (lower, upper) == pytest.approx((-expected, expected), abs=1e-8)
            assert float(limit.get("velocity")) == pytest.approx(math.pi, abs=1e-8)
    assert (float(joints[GRIPPER_JOINT].find("limit").get("lower")),
            float(joints[GRIPPER_JOINT].find("limit").get("upper"))) == (0.0, 0.04)  # fmt: skip
    assert joints["gripper_right_finger_joint"].find("mimic").get("joint") == GRIPPER_JOINT
    np.testing.assert_allclose(task.joint_limits, m.jnt_range[:6])
    # MuJoCo turns the mimic into a joint equality: the fingers move together.
    assert m.neq == 1 and m.eq_type[0] == mujoco.mjtEq.mjEQ_JOINT


def test_urdf_kinematics_are_the_ur5e_dh_parameters(task: PickPlaceTask) -> None:
    assert (D1, A2, A3, D4, D5, D6) == (0.1625, -0.425, -0.3922, 0.1333, 0.0997, 0.0996)
    ik = TcpIk(task.model)
    # UR's zero pose: the arm stretched out horizontally; in base_link (ur_description's
    # base_link_inertia turned by pi) wrist_1 is at (-(a2 + a3), d4, d1), the flange
    # (wrist_3) at (-(a2 + a3), d4 + d6, d1 - d5).
    ik.forward(np.zeros(6))
    xpos = {b: ik.data.xpos[task.model.body(b).id] for b in ("wrist_1_link", "wrist_3_link")}
    np.testing.assert_allclose(xpos["wrist_1_link"], [-(A2 + A3), D4, D1], atol=1e-9)
    np.testing.assert_allclose(xpos["wrist_3_link"], [-(A2 + A3), D4 + D6, D1 - D5], atol=1e-9)


def test_home_pose_puts_the_grasp_frame_over_the_table(task: PickPlaceTask) -> None:
    pos, rot = TcpIk(task.model).forward(HOME_QPOS)
    np.testing.assert_allclose(pos, HOME_TCP, atol=1e-6)
    np.testing.assert_allclose(rot, HOME_ROTATION, atol=1e-6)
    task.reset(0)
    np.testing.assert_allclose(task.tcp_position(), HOME_TCP, atol=1e-6)


# ----------------------------------------------------------------------------- task
def test_same_seed_same_episode_other_seed_other_layout(task: PickPlaceTask) -> None:
    task.reset(5)
    first = (task.cube_position(), task.cube_yaw(), task.target_bin(),
             {c: task.render(camera=c) for c in CAMERAS})  # fmt: skip
    task.step(HOME_QPOS + 0.05, 0.02)
    task.reset(6)
    other = task.cube_position()
    task.reset(5)
    again = (task.cube_position(), task.cube_yaw(), task.target_bin(),
             {c: task.render(camera=c) for c in CAMERAS})  # fmt: skip
    np.testing.assert_array_equal(first[0], again[0])
    assert first[1] == again[1] and first[2] == again[2]
    for cam in CAMERAS:
        np.testing.assert_array_equal(first[3][cam], again[3][cam])
    assert np.linalg.norm(other[:2] - first[0][:2]) > 1e-3
    assert task.time == 0.0 and not task.done
    np.testing.assert_array_equal(task.state_positions(), [*HOME_QPOS, 0.04])


def test_render_shapes_and_the_two_cameras_differ(task: PickPlaceTask) -> None:
    task.reset(0)
    images = task.render_all()
    assert set(images) == set(CAMERAS) == {"scene_camera", "wrist_camera"}
    for image in images.values():
        assert image.shape == (48, 64, 3) and image.dtype == np.uint8
        assert image.std() > 10
    assert np.count_nonzero(np.any(images["scene_camera"] != images["wrist_camera"], axis=2)) > 500
    assert task.render(32, 24, camera="wrist_camera").shape == (24, 32, 3)
    with pytest.raises(ValueError, match="camera"):
        task.render(camera="overhead")


def test_the_cue_colour_picks_the_bin_and_shows_only_in_the_images(task: PickPlaceTask) -> None:
    seeds = {b: _seed_with_bin(task, b) for b in ("left", "right")}
    scene, states = {}, {}
    cue = task.model.geom("cue").id
    for target, seed in seeds.items():
        task.reset(seed)
        np.testing.assert_allclose(task.model.geom_rgba[cue], BIN_COLORS[target], atol=1e-6)
        _place_cube(task, (0.45, 0.0, CUBE_HALF))  # the same scene but for the cue
        scene[target] = task.render(camera="scene_camera").astype(int)
        states[target] = task.state_positions()
    np.testing.assert_array_equal(states["left"], states["right"])
    changed = np.any(scene["left"] != scene["right"], axis=2)
    assert changed.sum() > 10
    redness = {b: (img[..., 0] - img[..., 2])[changed].mean() for b, img in scene.items()}
    assert redness["left"] > 100 and redness["right"] < -100  # red cue: left, blue: right


def test_outcomes_cube_in_the_right_bin_wrong_bin_off_table_and_collision(
    task: PickPlaceTask,
) -> None:
    seed = _seed_with_bin(task, "left")
    for where, expect in (("left", "success"), ("right", "wrong_bin")):
        task.reset(seed)
        bx, by = task.bin_center(where)
        _place_cube(task, (bx, by, CUBE_HALF + 0.01))
        while not task.done:
            task.step(HOME_QPOS)
        result = task.result
        assert (result.success, result.wrong_bin) == (expect == "success", expect == "wrong_bin")
        assert not result.collided and task.time < 1.0
        assert task.passed_side == where
    task.reset(seed)
    _place_cube(task, (1.2, 0.0, 0.3))  # beyond the table's edge
    task.step(HOME_QPOS)
    assert task.done and task.result.dropped and not task.success
    # Resting on the table, outside the bins: nothing happens until the time limit.
    with PickPlaceTask(PickPlaceConfig(time_limit=0.5, image_width=8, image_height=8)) as short:
        short.reset(seed)
        short.step(HOME_QPOS)
        assert not short.done
        while not short.done:
            short.step(HOME_QPOS)
        assert not short.success and short.time == pytest.approx(0.5)
    # Fingertips may press on the table (grasping needs them low)...
    task.reset(seed)
    ik = TcpIk(task.model)
    low, _ = ik.solve(HOME_QPOS, np.array([0.40, 0.25, -0.02]), HOME_ROTATION, 100)
    for _ in range(10):
        task.step(low)
    assert not task.done
    # ... but an arm link touching the table is a collision: the forearm pointing down.
    task.reset(seed)
    down = np.array([0.0, 0.0, 1.6, 0.0, -math.pi / 2, 0.0])
    task.data.qpos[task._qpos_adr[:6]] = down
    mujoco.mj_forward(task.model, task.data)
    task.step(down)
    assert task.done and task.collided and not task.success


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="control_dt"):
        PickPlaceConfig(control_dt=0.105)
    with pytest.raises(ValueError, match="cube_x_range"):
        PickPlaceConfig(cube_x_range=(0.2, 0.5))
    with pytest.raises(ValueError, match="image_width"):
        PickPlaceConfig(image_width=0)
    task = PickPlaceTask.__new__(PickPlaceTask)  # validation of commands needs no model
    with pytest.raises(ValueError, match="shape"):
        PickPlaceTask.set_joint_targets(task, np.zeros(7))


# ----------------------------------------------------------------------------- expert
def test_ik_reaches_a_pose_with_mujocos_jacobians(task: PickPlaceTask) -> None:
    ik = TcpIk(task.model)
    target = np.array([0.5, -0.1, 0.1])
    q, err = ik.solve(HOME_QPOS, target, yaw_rotation(0.6), 100)
    assert err < 1e-5
    pos, rot = ik.forward(q)
    np.testing.assert_allclose(pos, target, atol=1e-5)
    np.testing.assert_allclose(rot, yaw_rotation(0.6), atol=1e-5)


@pytest.mark.parametrize("mode", GRASP_MODES)
def test_expert_solves_seeds_in_both_grasp_modes(task: PickPlaceTask, mode: str) -> None:
    expert = PickPlaceExpert(task, seed=0)
    for seed in (0, 1):
        episode = run_pick_place_episode(task, expert, seed, mode=mode)
        assert episode.success, (seed, mode, episode)
        assert episode.mode == mode
        assert task.bin_containing(task.cube_position()) == episode.target_bin
        # Commands stay inside the URDF limits and under the UR5e's velocity limit.
        assert np.all(episode.actions >= task.joint_limits[:, 0])
        assert np.all(episode.actions <= task.joint_limits[:, 1])
        speeds = np.abs(np.diff(episode.actions, axis=0)) / task.config.control_dt
        assert speeds.max() <= math.pi
        assert (episode.gripper.min(), episode.gripper.max()) == (0.0, 0.04)
        grip_speed = np.abs(np.diff(episode.gripper)) / task.config.control_dt
        assert grip_speed.max() <= GRIPPER_VELOCITY + 1e-9
        assert episode.states.shape[1] == len(STATE_JOINT_NAMES) == 7


def test_expert_is_multimodal_and_deterministic(task: PickPlaceTask) -> None:
    modes = [PickPlaceExpert(task, seed=s) for s in range(40)]
    picked = []
    for s, expert in enumerate(modes):
        task.reset(s)
        expert.reset()
        picked.append(expert.mode)
    assert 10 <= picked.count("direct") <= 30  # about half of each
    wrist = {}
    for mode in GRASP_MODES:
        expert = PickPlaceExpert(task, seed=0)
        task.reset(3)
        expert.reset(mode)
        for _ in range(15):
            q, _ = expert.act()
        wrist[mode] = q[5]
    # The same image, two ways to turn the wrist: close to 90 degrees apart.
    assert abs(abs(wrist["direct"] - wrist["turned"]) - math.pi / 2) < 0.2
    runs = [run_pick_place_episode(task, PickPlaceExpert(task, seed=9), 4) for _ in range(2)]
    np.testing.assert_array_equal(runs[0].actions, runs[1].actions)
    np.testing.assert_array_equal(runs[0].states, runs[1].states)


# ----------------------------------------------------------------------------- engine
class _Sink(dict):
    def __init__(self) -> None:
        self.calls: dict[str, list[tuple]] = {}
        for key in ("joint_state", "images", "clock", "trajectory", "stream", "gripper", "log"):
            self[key] = self._recorder(key)

    def _recorder(self, key: str):
        def record(*args) -> None:
            self.calls.setdefault(key, []).append(args)

        return record


def _engine(**settings):
    from diffusion_policy_node.sim.engine import SimEngine, SimSettings

    sink = _Sink()
    config = PickPlaceConfig(image_width=32, image_height=24)
    engine = SimEngine(
        config,
        SimSettings(real_time_factor=0.0, camera_rate_hz=10.0, task="pick_place", **settings),
        sink,
        seed=2,
    )
    return engine, sink


def test_engine_hosts_pick_place_by_name() -> None:
    from diffusion_policy_node.sim.engine import TASKS, configs_from_parameters

    values = {
        "seed": 3, "real_time_factor": 1.0, "joint_state_rate_hz": 100.0, "camera_rate_hz": 10.0,
        "clock_rate_hz": 100.0, "image_width": 64, "image_height": 48, "physics_dt": 0.002,
        "control_dt": 0.1, "time_limit": 0.0, "expert": False, "expert_output": "trajectory",
        "pause_on_done": False, "start_paused": False, "frame_id": "camera", "qos_depth": 10,
    }  # fmt: skip
    settings, config = configs_from_parameters({**values, "task": "pick_place"})
    assert settings.task == "pick_place" and isinstance(config, PickPlaceConfig)
    assert config.time_limit == TASKS["pick_place"].time_limit == 20.0  # 0: the task's default
    settings, config = configs_from_parameters(values)  # no `task`: reach, as before
    assert settings.task == "reach" and config.time_limit == 10.0
    with pytest.raises(ValueError, match="parameter task="):
        configs_from_parameters({**values, "task": "stack"})


def test_engine_expert_episode_publishes_arm_gripper_and_both_cameras() -> None:
    engine, sink = _engine(expert=True, pause_on_done=True)
    try:
        while not engine.paused:
            engine.tick()
        report = engine.report()
    finally:
        engine.close()
    assert report["task"] == "pick_place" and report["success"], report
    assert report["side"] in GRASP_MODES and report["passed_side"] == report["target_bin"]
    names = {tuple(c[1]) for c in sink.calls["joint_state"]}
    assert names == {STATE_JOINT_NAMES}
    assert all(len(c[2]) == 7 and len(c[3]) == 7 for c in sink.calls["joint_state"])
    frames = sink.calls["images"]
    assert len(frames) >= 10 * report["time"]
    assert all(set(c[1]) == set(CAMERAS) for c in frames)
    assert all(img.shape == (24, 32, 3) for c in frames for img in c[1].values())
    trajectories = sink.calls["trajectory"]
    grippers = sink.calls["gripper"]
    assert len(trajectories) == len(grippers) >= 10 * (report["time"] - 0.1)
    assert all(tuple(c[1]) == ARM_JOINTS and c[2].tolist() == [0.1] for c in trajectories)
    values = np.array([c[1][0] for c in grippers])
    assert values.min() == 0.0 and values.max() == 0.04
    # Stamps: one command per control step, on the same tick as its trajectory.
    assert [c[0] for c in grippers] == [c[0] for c in trajectories]


def test_engine_follows_arm_trajectories_and_gripper_commands() -> None:
    from diffusion_policy_node.sim.engine import NS

    engine, _ = _engine()
    try:
        goal = HOME_QPOS + np.array([0.2, -0.1, 0.1, 0.1, 0.0, -0.3])
        engine.submit("trajectory", ([0.5], goal[None, :], None))
        engine.submit("gripper", [0.01])
        engine.handle_requests()
        for _ in range(round(1.5 * NS / engine.physics_ns)):
            engine.tick()
        q = engine.task.state_positions()
        np.testing.assert_allclose(q[:6], goal, atol=2e-3)
        assert q[6] == pytest.approx(0.01, abs=1e-3)
        engine.submit("stream", goal - 0.1)
        engine.submit("gripper", [0.04])
        engine.handle_requests()
        for _ in range(round(1.5 * NS / engine.physics_ns)):
            engine.tick()
        q = engine.task.state_positions()
        np.testing.assert_allclose(q[:6], goal - 0.1, atol=2e-3)
        assert q[6] == pytest.approx(0.04, abs=1e-3)
        with pytest.raises(ValueError, match="not finite"):
            engine._apply("gripper", [float("nan")])
    finally:
        engine.close()


# ----------------------------------------------------------------------------- Gazebo files
DESCRIPTION = URDF.parents[1]
XACRO_NS = "{http://www.ros.org/wiki/xacro}"


def _rpy(text: str) -> np.ndarray:
    """A URDF rpy attribute (xacro's ${pi} allowed) as a rotation matrix."""
    return rpy_matrix(*(float(v.replace("${pi}", repr(math.pi))) for v in text.split()))


def test_gazebo_description_matches_the_mujoco_robot_and_cameras(task: PickPlaceTask) -> None:
    from diffusion_policy_node.eval.collect import TASK_TOPICS
    from diffusion_policy_node.sim.ur5e_description import TCP_Z

    root = ET.parse(DESCRIPTION / "urdf" / "ur5e_gripper_gazebo.urdf.xacro").getroot()
    (include,) = root.findall(f"{XACRO_NS}include")
    assert include.get("filename").endswith("/description/urdf/ur5e_gripper.urdf")
    home = root.find(f"{XACRO_NS}property[@name='home']").get("value")
    np.testing.assert_allclose(eval(home.strip("${}")), HOME_QPOS, atol=1e-12)
    # ros2_control: the six UR joints by index + the gripper, commanded by position.
    control = root.find("ros2_control")
    indices = [int(j.get("index")) for j in control.findall(f"{XACRO_NS}arm_joint")]
    joints = [j.get("name") for j in control.findall("joint")]
    assert indices == list(range(6)) and joints == [GRIPPER_JOINT, "gripper_right_finger_joint"]
    assert control.find("joint/command_interface").get("name") == "position"
    # Cameras: the same pose and field of view as the MuJoCo ones (Gazebo looks along +x,
    # image up = +z; MuJoCo along -z, image up = +y).
    task.reset(0)
    tool_rot = task.tcp_rotation()
    tool_pos = task.tcp_position() - TCP_Z * tool_rot[:, 2]
    frames = {"world": (np.zeros(3), np.eye(3)), "tool0": (tool_pos, tool_rot)}
    topics = {}
    for cam in root.findall(f"{XACRO_NS}camera"):
        name = cam.get("name")
        origin, rot = frames[cam.get("parent")]
        pos = origin + rot @ np.array([float(v) for v in cam.get("xyz").split()])
        axes = rot @ _rpy(cam.get("rpy"))
        cid = task.model.camera(name).id
        mj_rot = task.data.cam_xmat[cid].reshape(3, 3)
        np.testing.assert_allclose(pos, task.data.cam_xpos[cid], atol=1e-6)
        np.testing.assert_allclose(axes[:, 0], -mj_rot[:, 2], atol=1e-6)
        np.testing.assert_allclose(axes[:, 2], mj_rot[:, 1], atol=1e-6)
        assert float(cam.get("fov")) == pytest.approx(math.radians(task.model.cam_fovy[cid]))
        topics[name] = cam.get("topic")
    assert set(topics) == set(CAMERAS)
    pick_place_topics = TASK_TOPICS["pick_place"]
    assert {t for t, kind in pick_place_topics.items() if kind.endswith("Image")} == set(
        topics.values()
    )
    bridge = yaml.safe_load((DESCRIPTION / "config" / "ur5e_gripper_gz_bridge.yaml").read_text())
    assert {e["ros_topic_name"] for e in bridge} == {"/clock", *topics.values()}
    assert all(e["direction"] == "GZ_TO_ROS" for e in bridge)


def test_gazebo_controllers_world_and_launch_file() -> None:
    doc = yaml.safe_load((DESCRIPTION / "config" / "ur5e_gripper_controllers.yaml").read_text())
    types = controller_types(doc)
    assert types == {
        "arm_controller": "joint_trajectory_controller/JointTrajectoryController",
        "gripper_controller": "forward_command_controller/ForwardCommandController",
        "joint_state_broadcaster": "joint_state_broadcaster/JointStateBroadcaster",
    }
    assert doc["arm_controller"]["ros__parameters"]["joints"] == list(ARM_JOINTS)
    assert doc["gripper_controller"]["ros__parameters"]["joints"] == [GRIPPER_JOINT]
    assert doc["gripper_controller"]["ros__parameters"]["interface_name"] == "position"
    world = ET.parse(DESCRIPTION / "worlds" / "ur5e_pick_place.sdf").getroot()
    assert {m.get("name") for m in world.iter("model")} >= {"table", "bin_left", "bin_right",
                                                             "cue", "cube"}  # fmt: skip
    assert "gz::sim::systems::Sensors" in {p.get("name") for p in world.iter("plugin")}
    launch = (URDF.parents[2] / "launch" / "gazebo_pick_place.launch.py").read_text()
    spawned = {"joint_state_broadcaster", *gazebo_controllers("gazebo_pick_place.launch.py")}
    assert spawned == set(types)
    for parts in [("description", "config", "ur5e_gripper_controllers.yaml"),
                  ("description", "config", "ur5e_gripper_gz_bridge.yaml"),
                  ("description", "urdf", "ur5e_gripper_gazebo.urdf.xacro"),
                  ("description", "worlds", "ur5e_pick_place.sdf")]:  # fmt: skip
        assert ", ".join(f'"{p}"' for p in parts) in launch
        assert (URDF.parents[2].joinpath(*parts)).is_file()
