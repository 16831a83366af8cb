"""ActionSchedule: dropping passed actions, replace vs ensemble, at()/remaining(), dry hold."""

import math

import numpy as np
import pytest

from diffusion_policy_node.runtime.action_schedule import ActionSchedule

DT = 0.1


def col(*values: float) -> np.ndarray:
    """A chunk (H, 1) with the given actions."""
    return np.array(values, dtype=np.float64)[:, None]


def test_past_actions_are_dropped_with_epsilon() -> None:
    sched = ActionSchedule(DT)
    assert sched.merge(col(0, 1, 2, 3, 4), t0=0.0, now=0.2) == 3
    times, actions = sched.remaining(0.2)
    np.testing.assert_allclose(times, [0.2, 0.3, 0.4])
    np.testing.assert_array_equal(actions[:, 0], [2, 3, 4])
    # an action due a hair before `now` (float noise) is kept; one due 5 ms before is not
    sched = ActionSchedule(DT)
    assert sched.merge(col(0, 1, 2), t0=0.0, now=0.1 + 1e-9) == 2
    sched = ActionSchedule(DT)
    assert sched.merge(col(0, 1, 2), t0=0.0, now=0.105) == 1
    # a chunk entirely in the past keeps nothing and changes nothing
    version = sched.version
    assert sched.merge(col(7, 7), t0=-1.0, now=0.105) == 0
    assert sched.version == version


def test_replace_newest_wins_from_its_first_kept_action() -> None:
    sched = ActionSchedule(DT, mode="replace")
    sched.merge(col(0, 1, 2, 3, 4), t0=0.0, now=0.0)
    # B predicted at 0.1 but arriving at 0.25: its actions at 0.1, 0.2 are dropped.
    assert sched.merge(col(10, 11, 12), t0=0.1, now=0.25) == 1
    times, actions = sched.remaining(0.0)
    # 0.2 is the current action at 0.25 (kept for at()); from 0.3 on B wins and A's 0.4 is gone
    np.testing.assert_allclose(times, [0.2, 0.3])
    np.testing.assert_array_equal(actions[:, 0], [2, 12])
    assert sched.horizon_end() == pytest.approx(0.3)


def test_ensemble_weights_oldest_first() -> None:
    m = 0.5
    sched = ActionSchedule(DT, mode="ensemble", ensemble_m=m)
    sched.merge(col(0, 1, 2, 3), t0=0.0, now=0.0)
    sched.merge(col(10, 20, 30, 40), t0=0.1, now=0.1)
    sched.merge(col(100, 200, 300, 400), t0=0.2, now=0.2)
    times, actions = sched.remaining(0.2)
    np.testing.assert_allclose(times, [0.2, 0.3, 0.4, 0.5])
    # w_i = exp(-m i), i = 0 the oldest prediction of that target time
    # 0.2: A=2, B=20, C=100 -> (2 + 20 e^-0.5 + 100 e^-1) / (1 + e^-0.5 + e^-1)
    # 0.3: A=3, B=30, C=200 ; 0.4: B=40, C=300 ; 0.5: C=400 only
    np.testing.assert_allclose(
        actions[:, 0], [25.789250819066034, 48.00006238989143, 138.1605738875178, 400.0]
    )
    w1 = math.exp(-m)
    assert actions[1, 0] == pytest.approx((3 + 30 * w1 + 200 * w1**2) / (1 + w1 + w1**2))


def test_ensemble_m_zero_is_plain_mean_and_grid_snapping() -> None:
    sched = ActionSchedule(DT, mode="ensemble", ensemble_m=0.0)
    sched.merge(np.array([[0.0, 1.0], [2.0, 3.0]]), t0=5.0, now=5.0)
    # tick time jittered by 0.3 ms: snapped onto the grid anchored at 5.0
    sched.merge(np.array([[4.0, 5.0], [6.0, 7.0]]), t0=5.1003, now=5.1003)
    times, actions = sched.remaining(5.1)
    np.testing.assert_allclose(times, [5.1, 5.2], atol=1e-12)
    np.testing.assert_allclose(actions, [[3.0, 4.0], [6.0, 7.0]])


def test_at_returns_tick_action_and_holds_when_dry() -> None:
    sched = ActionSchedule(DT)
    assert sched.at(0.0) is None  # nothing ever scheduled
    sched.merge(col(0, 1, 2, 3), t0=0.5, now=0.4)
    assert sched.at(0.45) is None  # first action is still in the future, nothing to hold
    assert sched.dry_count == 0
    assert sched.at(0.5)[0] == 0
    assert sched.at(0.65)[0] == 1  # the action of the tick just before t
    assert sched.at(0.8)[0] == 3
    assert sched.dry_count == 0
    assert sched.is_dry(0.9)
    np.testing.assert_array_equal(sched.at(0.9), [3.0])  # ran dry: hold
    np.testing.assert_array_equal(sched.at(1.0), [3.0])
    assert sched.dry_count == 2
    np.testing.assert_array_equal(sched.last_command, [3.0])


def test_remaining_is_future_only_and_strictly_increasing() -> None:
    sched = ActionSchedule(DT)
    sched.merge(col(0, 1, 2, 3, 4, 5), t0=0.0, now=0.0)
    sched.at(0.25)
    times, actions = sched.remaining(0.25)
    np.testing.assert_allclose(times, [0.3, 0.4, 0.5])
    assert np.all(np.diff(times) > 0)
    np.testing.assert_array_equal(actions[:, 0], [3, 4, 5])
    times, actions = sched.remaining(0.6)
    assert times.shape == (0,) and actions.shape == (0, 1)


def test_version_changes_only_with_content() -> None:
    sched = ActionSchedule(DT)
    assert sched.version == 0
    sched.clear()
    assert sched.version == 0
    sched.merge(col(1, 2), t0=0.0, now=0.0)
    assert sched.version == 1
    sched.at(0.0)
    sched.remaining(0.0)
    assert sched.version == 1
    sched.merge(col(3, 4), t0=0.1, now=0.1)
    assert sched.version == 2
    sched.clear()
    assert sched.version == 3
    assert len(sched) == 0 and sched.horizon_end() is None and sched.at(1.0) is None


def test_grid_reanchors_after_schedule_has_passed() -> None:
    sched = ActionSchedule(DT)
    sched.merge(col(0, 1), t0=0.0, now=0.0)
    sched.merge(col(5, 6), t0=0.53, now=0.53)  # schedule ended at 0.1 < 0.53: new grid
    times, _ = sched.remaining(0.53)
    np.testing.assert_allclose(times, [0.53, 0.63])
    # while the schedule is live, an off-grid chunk snaps to the nearest grid time
    sched.merge(col(7, 8), t0=0.60, now=0.6)
    times, actions = sched.remaining(0.6)
    np.testing.assert_allclose(times, [0.63, 0.73])
    np.testing.assert_array_equal(actions[:, 0], [7, 8])


def test_validation() -> None:
    with pytest.raises(ValueError, match="mode"):
        ActionSchedule(DT, mode="inpaint")
    with pytest.raises(ValueError, match="dt"):
        ActionSchedule(0.0)
    sched = ActionSchedule(DT)
    with pytest.raises(ValueError, match=r"\(H, D\)"):
        sched.merge(np.zeros(3), t0=0.0, now=0.0)
    sched.merge(np.zeros((2, 2)), t0=0.0, now=0.0)
    with pytest.raises(ValueError, match="action_dim"):
        sched.merge(np.zeros((2, 3)), t0=0.1, now=0.1)
