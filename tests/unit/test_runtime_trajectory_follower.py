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
