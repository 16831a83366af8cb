"""MuJoCo reach task and scripted expert: shapes, visibility of the goal, determinism, collision,
time limit, and the expert's success rate and bimodality."""

import numpy as np
import pytest

from diffusion_policy_node.sim.arm_task import (
    ArmTask,
    ArmTaskConfig,
    StepResult,
    equal_bend_ik,
    planar_forward_kinematics,
)
from diffusion_policy_node.sim.expert import SIDES, ScriptedExpert, run_expert_episode


@pytest.fixture(scope="module")
def task():
    with ArmTask() as t:
        yield t


def is_target_green(pixels: np.ndarray) -> np.ndarray:
    pixels = pixels.astype(int)
    return (pixels[..., 1] > 150) & (pixels[..., 0] < 100) & (pixels[..., 2] < 120)


def lateral_offsets(ep_xy: np.ndarray, start: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Signed distance of each point from the start->target line, positive on the left."""
    along = (target - start) / np.linalg.norm(target - start)
    rel = ep_xy - start
    return along[0] * rel[:, 1] - along[1] * rel[:, 0]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("control_dt", 0.0),
        ("physics_dt", 0.3),
        ("control_dt", 0.105),
        ("time_limit", float("nan")),
        ("target_distance_range", (0.42, 0.32)),
        ("target_distance_range", (0.3, 0.6)),
        ("obstacle_radius", 0.2),
        ("image_width", 0),
        ("image_height", 10_000),
    ],
)
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        ArmTaskConfig(**{field: value})


def test_step_and_render_shapes(task):
    task.reset(0)
    result = task.step(task.home_joint_positions)
    assert isinstance(result, StepResult)
    assert result == StepResult(done=False, success=False, collided=False)
    assert task.time == pytest.approx(task.config.control_dt)
    assert task.joint_positions().shape == (3,)
    assert task.joint_velocities().shape == (3,)
    assert task.joint_limits.shape == (3, 2)
    assert list(task.joint_names) == ["joint1", "joint2", "joint3"]
    image = task.render()
    assert image.shape == (96, 96, 3) and image.dtype == np.uint8
    assert task.render(width=64, height=48).shape == (48, 64, 3)
    assert image.std() > 10, "blank image"
    with pytest.raises(ValueError, match="width"):
        task.render(width=100_000)


def test_bad_joint_targets_are_rejected(task):
    task.reset(0)
    with pytest.raises(ValueError, match="shape"):
        task.step(np.zeros(2))
    with pytest.raises(ValueError, match="NaN"):
        task.step(np.array([0.0, np.nan, 0.0]))


def test_ik_round_trip_and_tracking(task):
    task.reset(0)
    point = np.array([-0.1, 0.3])
    q = equal_bend_ik(point)
    np.testing.assert_allclose(planar_forward_kinematics(q)[-1], point, atol=1e-6)
    for _ in range(20):
        task.step(q)
    np.testing.assert_allclose(task.joint_positions(), q, atol=2e-3)
    np.testing.assert_allclose(task.ee_position()[:2], point, atol=2e-3)
    with pytest.raises(ValueError, match="reachable"):
        equal_bend_ik((0.0, 0.9))


def test_goal_is_in_the_image_not_in_the_joint_state(task):
    states, images = [], []
    for seed in (1, 2):
        task.reset(seed)
        states.append(np.concatenate([task.joint_positions(), task.joint_velocities()]))
        images.append(task.render())
    np.testing.assert_array_equal(states[0], states[1])
    assert not np.array_equal(images[0], images[1])

    size = 96
    image = images[1]
    u, v = task.project(task.target_position(), size, size)
    col, row = round(u), round(v)
    window = image[row - 2 : row + 3, col - 2 : col + 3]
    assert is_target_green(window).mean() > 0.8
    green_rows, green_cols = np.nonzero(is_target_green(image))
    assert abs(green_rows.mean() - v) < 2.0 and abs(green_cols.mean() - u) < 2.0

    old = task.target_position()[:2].copy()
    new = old + np.array([0.08, 0.0])
    task.set_target_position(new)
    moved = task.render()
    u2, v2 = task.project(task.target_position(), size, size)
    assert u2 - u > 8
    assert is_target_green(moved[round(v2), round(u2)])
    assert not is_target_green(moved[row, col])
    np.testing.assert_array_equal(task.joint_positions(), states[1][:3])


def test_same_seed_same_trajectory_and_images():
    actions = np.random.default_rng(5).uniform(-0.1, 0.1, size=(6, 3))
    runs = []
    for _ in range(2):
        with ArmTask() as t:
            t.reset(11)
            q = t.home_joint_positions
            joints, frames = [], []
            for a in actions:
                q = q + a
                t.step(q)
                joints.append(t.joint_positions())
                frames.append(t.render())
            runs.append((t.target_position(), np.array(joints), np.array(frames)))
    for first, second in zip(runs[0], runs[1], strict=True):
        np.testing.assert_array_equal(first, second)
    with ArmTask() as t:
        t.reset(12)
        assert not np.array_equal(t.target_position(), runs[0][0])


def test_step_equals_fine_physics_steps():
    with ArmTask() as coarse, ArmTask() as fine:
        q = equal_bend_ik((0.15, 0.25))
        coarse.reset(4)
        fine.reset(4)
        for _ in range(3):
            coarse.step(q)
            fine.set_joint_targets(q)
            for _ in range(10):
                fine.step_physics(0.01)
        assert fine.time == pytest.approx(coarse.time)
        np.testing.assert_array_equal(fine.joint_positions(), coarse.joint_positions())


def test_collision_with_obstacle_ends_episode_as_failure(task):
    task.reset(3)
    start = task.ee_position()[:2]
    obstacle = task.obstacle_position()[:2]
    steps = 0
    while not task.done:
        fraction = min(1.0, 0.1 * (steps + 1))
        result = task.step(equal_bend_ik(start + fraction * (obstacle - start)))
        steps += 1
    assert result == StepResult(done=True, success=False, collided=True)
    assert task.time < 3.0
    reached = np.linalg.norm(task.ee_position()[:2] - obstacle)
    assert reached < task.config.obstacle_radius + 0.02
    task.step(task.joint_positions())  # latched: stepping on does not change the outcome
    assert task.result == result
    task.reset(3)
    assert task.result == StepResult(done=False, success=False, collided=False)


def test_time_limit_ends_episode_without_success():
    with ArmTask(ArmTaskConfig(time_limit=1.0)) as t:
        t.reset(0)
        n_steps = 0
        while not t.done:
            t.step(t.home_joint_positions)
            n_steps += 1
        assert n_steps == 10
        assert t.result == StepResult(done=True, success=False, collided=False)


def test_expert_solves_task_and_picks_both_sides():
    with ArmTask() as t:
        expert = ScriptedExpert(t, seed=0)
        episodes = [run_expert_episode(t, expert, seed) for seed in range(40)]
        successes = np.mean([ep.success for ep in episodes])
        left = np.mean([ep.side == "left" for ep in episodes])
        assert successes >= 0.95
        assert not any(ep.collided for ep in episodes)
        assert 0.3 <= left <= 0.7
        for ep in episodes:
            start = np.vstack([t.home_joint_positions, ep.actions])
            assert np.abs(np.diff(start, axis=0)).max() <= expert.max_joint_step + 1e-12
            assert len(ep.actions) * t.config.control_dt < t.config.time_limit


def test_left_and_right_demos_differ():
    with ArmTask() as t:
        expert = ScriptedExpert(t, seed=0)
        for seed in (5, 6, 7):
            runs = {}
            for side in SIDES:
                runs[side] = run_expert_episode(t, expert, seed, side=side)
                assert t.passed_side == side  # the task sees the side the arm actually took
            t.reset(seed)
            assert t.passed_side is None
            start = t.home_joint_positions
            start_xy = planar_forward_kinematics(start)[-1]
            target = t.target_position()[:2]
            left = lateral_offsets(runs["left"].ee_xy, start_xy, target)
            right = lateral_offsets(runs["right"].ee_xy, start_xy, target)
            assert runs["left"].success and runs["right"].success
            assert left.max() > 0.05 and left.min() > -0.01
            assert right.min() < -0.05 and right.max() < 0.01
            # the base joint swings further counter-clockwise when passing on the left
            n = min(len(runs["left"].actions), len(runs["right"].actions))
            mid = n // 2
            assert runs["left"].actions[mid, 0] > runs["right"].actions[mid, 0] + 0.1


def test_expert_rejects_bad_side(task):
    expert = ScriptedExpert(task, seed=0)
    task.reset(0)
    with pytest.raises(ValueError, match="side"):
        expert.reset("up")
