"""TrajectoryFollower: JTC-like start segment, interpolation, replacement, validation."""

import numpy as np
import pytest

from diffusion_policy_node.runtime.trajectory_follower import TrajectoryFollower


def test_nothing_before_first_trajectory() -> None:
    f = TrajectoryFollower()
    assert f.sample(0.0) is None and not f.has_trajectory and f.end_time() is None


@pytest.mark.parametrize("start_time", [None, 0.0])
def test_stamp_zero_means_now_and_starts_from_current(start_time: float | None) -> None:
    f = TrajectoryFollower()
    f.set_trajectory([0.5, 1.0], [[1.0], [2.0]], start_time, now=10.0, current_position=[0.0])
    assert f.end_time() == pytest.approx(11.0)
    expected = {9.0: 0.0, 10.0: 0.0, 10.25: 0.5, 10.5: 1.0, 10.75: 1.5, 11.0: 2.0, 12.0: 2.0}
    for t, value in expected.items():
        assert f.sample(t)[0] == pytest.approx(value), t


def test_future_start_interpolates_from_receive_time() -> None:
    f = TrajectoryFollower()
    f.set_trajectory(
        [0.0, 1.0], [[4.0, 0.0], [8.0, -2.0]], 12.0, now=10.0, current_position=[0, 0]
    )
    np.testing.assert_allclose(f.sample(11.0), [2.0, 0.0])  # halfway from (10, 0) to (12, 4)
    np.testing.assert_allclose(f.sample(12.5), [6.0, -1.0])


def test_passed_points_are_skipped() -> None:
    f = TrajectoryFollower()
    f.set_trajectory([0.5, 1.0, 1.5], [[1.0], [2.0], [4.0]], 9.0, now=9.8, current_position=[0.0])
    # 9.8 lies in segment [9.5, 10.0]: sampled there (a late message jumps, as in JTC)
    assert f.sample(9.8)[0] == pytest.approx(1.6)
    assert f.sample(10.25)[0] == pytest.approx(3.0)
    f.set_trajectory([0.5], [[1.0]], 5.0, now=9.8, current_position=[0.0])
    assert f.sample(9.8)[0] == pytest.approx(1.0)  # everything passed: hold the last point


def test_new_trajectory_replaces_old() -> None:
    f = TrajectoryFollower()
    f.set_trajectory([1.0], [[10.0]], None, now=0.0, current_position=[0.0])
    assert f.sample(0.5)[0] == pytest.approx(5.0)
    f.set_trajectory([0.5, 1.0], [[-1.0], [-3.0]], None, now=0.5, current_position=[5.0])
    assert f.sample(0.75)[0] == pytest.approx(2.0)  # from 5 at 0.5 towards -1 at 1.0
    assert f.sample(1.25)[0] == pytest.approx(-2.0)
    assert f.sample(3.0)[0] == pytest.approx(-3.0)
    assert f.trajectory_count == 2
    f.set_trajectory([], np.zeros((0, 1)), None, now=1.0, current_position=[-1.5])
    assert f.sample(2.0)[0] == pytest.approx(-1.5)  # empty message: hold


def test_invalid_trajectories() -> None:
    f = TrajectoryFollower()
    with pytest.raises(ValueError, match="strictly increasing; point 2"):
        f.set_trajectory([0.1, 0.2, 0.2], np.zeros((3, 1)), None, 0.0, [0.0])
    with pytest.raises(ValueError, match="strictly increasing"):
        f.set_trajectory([0.3, 0.2], np.zeros((2, 1)), None, 0.0, [0.0])
    with pytest.raises(ValueError, match=">= 0"):
        f.set_trajectory([-0.1, 0.2], np.zeros((2, 1)), None, 0.0, [0.0])
    with pytest.raises(ValueError, match=r"shape \(2, 1\)"):
        f.set_trajectory([0.1, 0.2], np.zeros((2, 2)), None, 0.0, [0.0])
    with pytest.raises(ValueError, match="finite"):
        f.set_trajectory([0.1], [[np.nan]], None, 0.0, [0.0])
    assert not f.has_trajectory


# ------------------------------------------------------------------------------ JTC's splines
# Golden samples from the coefficient formulas of ros2_controllers' joint_trajectory_controller
# (trajectory.cpp, interpolate_between_points), worked out by hand for unit segments.
def _state(f: TrajectoryFollower, t: float) -> tuple[float, float, float]:
    p, v, a = f.sample_state(t)
    return float(p[0]), float(v[0]), float(a[0])


def test_positions_only_is_linear_with_velocity_steps() -> None:
    f = TrajectoryFollower()
    f.set_trajectory([1.0, 2.0], [[1.0], [1.5]], None, now=0.0, current_position=[0.0])
    assert _state(f, 0.25) == pytest.approx((0.25, 1.0, 0.0))
    assert _state(f, 1.5) == pytest.approx((1.25, 0.5, 0.0))  # the velocity stepped at 1.0
    assert f.kind == "positions"


def test_velocities_give_cubic_hermite_segments() -> None:
    f = TrajectoryFollower()
    f.set_trajectory(
        [1.0, 3.0], [[1.0], [1.75]], None, now=0.0, current_position=[0.0],
        velocities=[[0.0], [0.0]], current_velocity=[0.0],
    )  # fmt: skip
    # 0 -> 1 in 1 s, v 0 -> 0: p = 3s^2 - 2s^3
    assert _state(f, 0.25) == pytest.approx((0.15625, 1.125, 3.0))
    assert _state(f, 0.5) == pytest.approx((0.5, 1.5, 0.0))
    f.set_trajectory(
        [2.0], [[1.0]], None, now=0.0, current_position=[0.0],
        velocities=[[0.0]], current_velocity=[1.0],
    )  # fmt: skip
    # 0 -> 1 in 2 s, v 1 -> 0: c2 = -1/4, c3 = 0
    assert _state(f, 1.0) == pytest.approx((0.75, 0.5, -0.5))
    assert f.kind == "velocities"


def test_accelerations_give_quintic_segments() -> None:
    f = TrajectoryFollower()
    f.set_trajectory(
        [1.0], [[1.0]], None, now=0.0, current_position=[0.0],
        velocities=[[0.0]], accelerations=[[0.0]],
    )  # fmt: skip
    # 0 -> 1 in 1 s at rest at both ends: p = 10s^3 - 15s^4 + 6s^5
    assert _state(f, 0.25) == pytest.approx((0.103515625, 1.0546875, 5.625))
    assert _state(f, 0.5) == pytest.approx((0.5, 1.875, 0.0))
    assert _state(f, 2.0) == pytest.approx((1.0, 0.0, 0.0))  # after the last point: hold it
    assert f.kind == "accelerations"


def test_start_now_and_a_state_without_velocity() -> None:
    f = TrajectoryFollower()
    # header.stamp 0: points timed from the receive time; a measured state without velocity
    # meets points with velocities: zeros (newer JTC), so the first segment is cubic
    f.set_trajectory([1.0], [[1.0]], 0.0, now=5.0, current_position=[0.0], velocities=[[0.0]])
    assert _state(f, 5.5) == pytest.approx((0.5, 1.5, 0.0))
    # positions-only points: linear even from a moving state
    f.set_trajectory([1.0], [[1.0]], None, now=0.0, current_position=[0.0], current_velocity=[3.0])
    assert _state(f, 0.5) == pytest.approx((0.5, 1.0, 0.0))
    with pytest.raises(ValueError, match="accelerations need velocities"):
        f.set_trajectory([1.0], [[1.0]], None, 0.0, [0.0], accelerations=[[0.0]])


def test_a_replacement_starts_from_what_executes_then() -> None:
    """from_desired (interpolate_from_desired_state / open_loop_control): the new message's
    first segment starts at the old trajectory's position, velocity and acceleration, so the
    commanded velocity does not jump at the chunk boundary."""
    f = TrajectoryFollower()
    f.set_trajectory(
        [1.0, 2.0], [[1.0], [2.0]], None, now=0.0, current_position=[0.0],
        velocities=[[1.0], [0.0]], accelerations=[[0.0], [0.0]],
    )  # fmt: skip
    before = f.sample_state(0.6)
    f.set_trajectory(
        [0.4, 1.4], [[1.2], [1.5]], None, now=0.6, velocities=[[0.5], [0.0]],
        accelerations=[[0.0], [0.0]], from_desired=True,
    )  # fmt: skip
    after = f.sample_state(0.6)
    for x, y in zip(before, after, strict=True):
        np.testing.assert_allclose(x, y)
    # and the next instant continues smoothly (no step in velocity)
    assert abs(f.sample_state(0.61)[1][0] - before[1][0]) < 0.05
    # a measured-state replacement of a positions-only message: linear from the state
    f.set_trajectory([0.5], [[2.0]], None, now=1.0, current_position=[1.0])
    assert _state(f, 1.25) == pytest.approx((1.5, 2.0, 0.0))
