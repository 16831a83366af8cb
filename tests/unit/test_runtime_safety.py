"""Safety: limits validation, default limits, position/velocity clamps, NaN guard."""

import numpy as np
import pytest

from diffusion_policy_node.runtime.safety import (
    SafetyFilter,
    SafetyLimits,
    limits_from_action_range,
)


def make_filter() -> SafetyFilter:
    limits = SafetyLimits(lower=[-1.0, 0.0], upper=[1.0, 2.0], max_velocity=[1.0, 5.0])
    return SafetyFilter(limits, dt=0.1)  # max step: 0.1 and 0.5 per tick


def test_limits_validation() -> None:
    with pytest.raises(ValueError, match=r"lower must be < upper.*index \[1\]"):
        SafetyLimits([0.0, 1.0], [1.0, 1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="max_velocity must be > 0"):
        SafetyLimits([0.0], [1.0], [0.0])
    with pytest.raises(ValueError, match="finite"):
        SafetyLimits([0.0], [np.inf], [1.0])
    with pytest.raises(ValueError, match="lengths differ"):
        SafetyLimits([0.0, 0.0], [1.0, 1.0], [1.0])
    limits = SafetyLimits([0, 0], [1, 1], [2, 2])
    assert limits.dim == 2 and limits.lower.dtype == np.float64


def test_limits_from_action_range_golden() -> None:
    limits = limits_from_action_range([0.0, -1.0, 2.0], [1.0, 1.0, 2.0], margin_frac=0.1)
    np.testing.assert_allclose(limits.lower, [-0.1, -1.2, 1.999])
    np.testing.assert_allclose(limits.upper, [1.1, 1.2, 2.001])
    np.testing.assert_allclose(limits.max_velocity, [1.2, 2.4, 0.002])
    limits = limits_from_action_range([0.0], [1.0], margin_frac=0.0, max_velocity=0.5)
    np.testing.assert_allclose([limits.lower[0], limits.upper[0]], [-0.001, 1.001])
    np.testing.assert_allclose(limits.max_velocity, [0.5])
    with pytest.raises(ValueError, match="action_max < action_min"):
        limits_from_action_range([1.0], [0.0])


def test_position_clamp_without_previous() -> None:
    f = make_filter()
    np.testing.assert_allclose(f.filter([3.0, -1.0], None), [1.0, 0.0])
    np.testing.assert_allclose(f.filter([0.5, 1.0], None), [0.5, 1.0])
    assert f.position_clamp_count == 1 and f.velocity_clamp_count == 0


def test_velocity_clamp_per_step() -> None:
    f = make_filter()
    np.testing.assert_allclose(f.filter([0.5, 1.9], [0.0, 1.0]), [0.1, 1.5])
    np.testing.assert_allclose(f.filter([-0.5, 1.2], [0.0, 1.0]), [-0.1, 1.2])
    # both: clamp to the limit 1.0 first, then the step from 0.95 is only 0.05
    np.testing.assert_allclose(f.filter([4.0, 1.0], [0.95, 1.0]), [1.0, 1.0])
    assert f.velocity_clamp_count == 2
    # previous outside the limits: move towards them at max velocity, never jump
    np.testing.assert_allclose(f.filter([0.0, 1.0], [1.5, 1.0]), [1.4, 1.0])


def test_nonfinite_returns_none_and_counts() -> None:
    f = make_filter()
    assert f.filter([np.nan, 0.0], [0.0, 0.0]) is None
    assert f.filter([0.0, np.inf], None) is None
    assert f.nonfinite_count == 2
    with pytest.raises(ValueError, match="shape"):
        f.filter([0.0, 0.0, 0.0], None)


def test_filter_trajectory_is_cumulative() -> None:
    f = make_filter()
    actions = np.array([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0], [-1.0, 2.0]])
    out = f.filter_trajectory(actions, start=[0.0, 0.5])
    np.testing.assert_allclose(out, [[0.1, 1.0], [0.2, 1.5], [0.3, 2.0], [0.2, 2.0]])
    actions[2, 1] = np.nan
    assert f.filter_trajectory(actions, start=[0.0, 0.5]) is None
    assert f.nonfinite_count == 1
