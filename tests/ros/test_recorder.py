"""dp-collect end to end: sim_node (expert) + recorder_node + episode driver as real processes over
DDS record 2 episodes; the bags read back through data.bag_reader and match an offline replay of
the same simulation (the simulation is deterministic, so every message is known)."""

from __future__ import annotations

import json
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from diffusion_policy_node.data.bag_reader import find_bags, read_bag
from diffusion_policy_node.data.config import load_data_config
from diffusion_policy_node.sim.arm_task import HOME_QPOS, ArmTaskConfig
from diffusion_policy_node.sim.engine import SimEngine, SimSettings

pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parents[2]
CAMERA_HZ = 10.0
SEED = 0
EPISODES = 2


@lru_cache(maxsize=EPISODES)
def offline_episode(seed: int) -> dict[str, list]:
    """Every message sim_node publishes in one expert episode, simulated in-process."""
    log: dict[str, list] = {"joint_state": [], "image": [], "trajectory": []}
    sink = {
        "joint_state": lambda ns, names, pos, vel: log["joint_state"].append((ns, pos.copy())),
        "image": lambda ns, rgb: log["image"].append((ns, rgb.copy())),
        "trajectory": lambda ns, names, tfs, pos: log["trajectory"].append((ns, pos[0].copy())),
        "clock": lambda ns: None,
        "stream": lambda ns, pos: None,
        "log": lambda level, text: None,
    }
    settings = SimSettings(
        camera_rate_hz=CAMERA_HZ, real_time_factor=0.0, expert=True, pause_on_done=True
    )
    engine = SimEngine(ArmTaskConfig(), settings, sink, seed=seed)
    try:
        while not engine.paused:
            engine.tick()
        log["outcome"] = [engine.report()]
    finally:
        engine.close()
    return log


@pytest.fixture(scope="module")
def collected(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    out = tmp_path_factory.mktemp("collect") / "demos"
    proc = subprocess.run(
        [
            sys.executable, "-m", "diffusion_policy_node.eval.collect",
            "--episodes", str(EPISODES), "--out", str(out), "--seed", str(SEED),
            "--real-time-factor", "3", "--camera-rate", str(CAMERA_HZ), "--timeout", "60",
        ],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    logs = "".join(p.read_text() for p in sorted((out / "logs").glob("*.log")))
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}\n{logs[-4000:]}"
    return out, proc.stdout.strip().splitlines()


def test_collect_summary_and_episode_log(collected: tuple[Path, list[str]]) -> None:
    out, stdout = collected
    summary = json.loads(stdout[-1])
    assert summary["episodes"] == EPISODES and summary["successes"] == EPISODES
    records = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert [r["seed"] for r in records] == [SEED + i for i in range(EPISODES)]
    for record in records:
        reference = offline_episode(record["seed"])
        assert record["success"] is reference["outcome"][0]["success"] is True
        assert record["side"] == reference["outcome"][0]["side"]
        assert record["kept_bag"] == str(out / "bags" / f"episode_{record['episode']:04d}")
        # Nothing lost between the sim, DDS and the recorder.
        assert record["messages"] == {
            "/camera/image_raw": len(reference["image"]),
            "/joint_states": len(reference["joint_state"]),
            "/arm_controller/joint_trajectory": len(reference["trajectory"]),
        }
    assert summary["bags"] == [r["kept_bag"] for r in records]


def test_bags_read_back_as_the_simulated_episodes(collected: tuple[Path, list[str]]) -> None:
    out, _ = collected
    config = load_data_config(REPO / "config" / "robots" / "sim_arm" / "data.yaml")
    bags = find_bags([out / "bags"])
    assert [b.name for b in bags] == [f"episode_{i:04d}" for i in range(EPISODES)]
    assert all((b / f"{b.name}.mcap").is_file() for b in bags)
    for i, bag in enumerate(bags):
        contents = read_bag(bag, config)
        assert contents.skipped == []
        (episode,) = contents.episodes
        ref = offline_episode(SEED + i)
        traj_ns = np.array([ns for ns, _ in ref["trajectory"]])
        # The grid starts with the episode (every stream publishes at the reset) and has one
        # step per expert command.
        assert len(episode) == len(traj_ns)
        assert np.all(np.diff(episode.times_ns) == config.dt_ns)
        js_ns = np.array([ns for ns, _ in ref["joint_state"]])
        js = np.stack([q for _, q in ref["joint_state"]])
        img_ns = np.array([ns for ns, _ in ref["image"]])
        grid_local = (episode.times_ns - episode.times_ns[0]) + js_ns[0]
        state = js[np.searchsorted(js_ns, grid_local, side="right") - 1]
        action = np.stack([q for _, q in ref["trajectory"]])
        np.testing.assert_allclose(episode.state, state, atol=1e-4)
        np.testing.assert_allclose(episode.action, action, atol=1e-4)
        np.testing.assert_allclose(episode.state[0], HOME_QPOS, atol=1e-6)
        frames = np.stack(
            [ref["image"][k][1] for k in np.searchsorted(img_ns, grid_local, "right") - 1]
        )
        assert np.array_equal(episode.images[0, 0], frames[0])
        assert np.mean(np.abs(episode.images[:, 0].astype(float) - frames)) < 0.5


def test_installed_msg_definitions_reproduce_the_type_hash(tmp_path: Path) -> None:
    # Types unknown to rosbags' store are registered from the installed .msg files; for a
    # known type the result must be identical (same RIHS01 hash, nested types included).
    from rosbags.typesys import Stores, get_typestore

    from diffusion_policy_node.data.bag_writer import BagWriter
    from diffusion_policy_node.ros.recorder_node import msg_definitions

    defs = msg_definitions("trajectory_msgs/msg/JointTrajectory", known=lambda t: False)
    assert set(defs) == {
        "trajectory_msgs/msg/JointTrajectory",
        "trajectory_msgs/msg/JointTrajectoryPoint",
        "std_msgs/msg/Header",
        "builtin_interfaces/msg/Time",
        "builtin_interfaces/msg/Duration",
    }
    reference = get_typestore(Stores.ROS2_JAZZY)
    with BagWriter(tmp_path / "bag", definitions=defs) as writer:
        for name in defs:
            assert writer.typestore.hash_rihs01(name) == reference.hash_rihs01(name), name
    with pytest.raises(ValueError, match="no definition file for nopkg/msg/X"):
        msg_definitions("nopkg/msg/X", known=lambda t: False)


class ReplayWorker:
    """A 'policy' that returns the recorded actions of the episode for the observed grid step
    (the Worker protocol of runtime.controller, answering at once)."""

    def __init__(self, actions: np.ndarray, t0: float, dt: float, n_obs: int, horizon: int):
        self.actions, self.t0, self.dt, self.n_obs, self.horizon = actions, t0, dt, n_obs, horizon
        self.busy, self.alive, self.last_error = False, True, None
        self.latency_estimate, self.completed_count, self.error_count = None, 0, 0
        self._result = None

    def submit(self, obs: dict, t_obs: float) -> bool:
        from diffusion_policy_node.runtime.inference_worker import InferenceResult

        g = round((t_obs - self.t0) / self.dt) - (self.n_obs - 1)
        idx = np.clip(np.arange(g, g + self.horizon), 0, len(self.actions) - 1)
        self._result = InferenceResult(self.actions[idx].astype(np.float64), t_obs, 0.0)
        return True

    def poll(self):
        result, self._result = self._result, None
        return result

    def reset(self) -> None:
        self._result = None

    def latency_stats(self):
        from diffusion_policy_node.runtime.inference_worker import LatencyStats

        return LatencyStats(0, None, None, None, None)


def _replay_through_controller(episode, grid_s: np.ndarray, action_lead: float) -> list:
    """Published (target time, position) of every trajectory point when the controller runs
    the recorded episode on its own grid (sim seconds) with the given convention."""
    from diffusion_policy_node.policy.config import PolicyConfig
    from diffusion_policy_node.runtime.controller import Controller
    from diffusion_policy_node.runtime.settings import (
        PolicyInfo,
        PolicyNodeParams,
        resolve_settings,
    )

    config = PolicyConfig(
        joint_names=["joint1", "joint2", "joint3"], dt=0.1, image_size=(8, 8), crop_shape=None,
        action_lead=action_lead,
    )  # fmt: skip
    settings = resolve_settings(
        # The replayed episode moves from its first step on, so the first chunk must not be
        # started late as on an arm that stood still during inference.
        PolicyNodeParams(
            checkpoint="/x", max_joint_velocity=(100.0,), start_idle_chunks_late=False
        ),
        config,
    )
    info = PolicyInfo("cpu", episode.action.min(0) - 1, episode.action.max(0) + 1, 10)
    worker = ReplayWorker(episode.action, grid_s[0], 0.1, config.n_obs_steps, config.horizon)
    now = [grid_s[0]]
    sent: list = []
    ctl = Controller(
        settings, info, worker, clock=lambda: now[0], publish=sent.append,
        decode=lambda topic, raw: raw, log=lambda *a: None,
    )  # fmt: skip
    image = np.zeros((8, 8, 3), np.uint8)
    for k, t in enumerate(grid_s):
        now[0] = float(t)
        ctl.offer_image("/camera/image_raw", image, float(t))
        ctl.offer_state(episode.state[k], float(t))
        ctl.tick(float(t), float(t))
    return [
        (cmd.stamp + tf, pos)
        for cmd in sent
        for tf, pos in zip(cmd.times, cmd.positions, strict=True)
    ]


def test_replayed_actions_land_when_the_expert_commanded_them(collected) -> None:
    # docs/design.md#action-time-convention: a_k is the position to reach at t_k + action_lead.
    # The expert commands its point for time_from_start = dt, the data pipeline reads the
    # trajectory at t_k + dt, so the
    # node must schedule a_k at t_k + dt: then every published point is exactly an expert point.
    from diffusion_policy_node.policy.config import action_lead_of

    out, _ = collected
    config = load_data_config(REPO / "config" / "robots" / "sim_arm" / "data.yaml")
    (episode,) = read_bag(find_bags([out / "bags"])[0], config).episodes
    ref = offline_episode(SEED)
    commanded = {round((ns * 1e-9 + 0.1) * 1e3): q for ns, q in ref["trajectory"]}  # ms -> q
    js_ns = np.array([ns for ns, _ in ref["joint_state"]])
    grid_s = ((episode.times_ns - episode.times_ns[0]) + js_ns[0]) * 1e-9
    lead = action_lead_of(config.action_source, config.command_type, config.dt)
    assert lead == pytest.approx(0.1)

    def mismatches(action_lead: float) -> tuple[int, int]:
        points = _replay_through_controller(episode, grid_s, action_lead)
        # the replay 'policy' repeats the last action past the episode: not expert points
        points = [(t, pos) for t, pos in points if round(t * 1e3) <= max(commanded)]
        bad = 0
        for t, pos in points:
            q = commanded.get(round(t * 1e3))
            # ±1 ms: the key is the millisecond; the position must be the expert's point
            if q is None or np.max(np.abs(pos - q)) > 1e-4:
                bad += 1
        return bad, len(points)

    bad, n = mismatches(lead)
    assert n > 30 and bad == 0, (bad, n)
    bad_old, n_old = mismatches(0.0)  # the old convention: one tick ahead of the expert
    assert bad_old > 0.9 * n_old
