"""Receiver-side timing of bench/control_jitter.py: lateness against one fixed grid (never
re-snapped), missed slots, and when the executed point of replaced trajectories changes."""

from __future__ import annotations

import numpy as np
import pytest

from bench._common import executed_point_times, grid_lateness


def test_on_grid_events_are_on_time_and_a_gap_is_a_missed_tick():
    dt = 0.1
    events = 5.0 + dt * np.array([0, 1, 2, 4, 5])
    lateness, missed = grid_lateness(events, dt)
    np.testing.assert_allclose(lateness, 0.0, atol=1e-12)
    assert missed == 1


def test_a_late_event_is_late_and_the_grid_is_not_resnapped_after_it():
    dt = 0.02
    events = dt * np.arange(10.0)
    events[3] += 0.005  # one late event; the following ones stay on the original grid
    lateness, missed = grid_lateness(events, dt)
    assert missed == 0
    assert lateness[3] == pytest.approx(0.005)
    np.testing.assert_allclose(np.delete(lateness, 3), 0.0, atol=1e-12)
    # A grid shifted by a re-snap shows as lateness of every later event.
    shifted = np.concatenate([events[:3], events[3:] + 0.004])
    shifted[3] -= 0.005
    lateness, _ = grid_lateness(shifted, dt)
    np.testing.assert_allclose(lateness[3:], 0.004, atol=1e-12)


def test_executed_points_follow_replacement_and_skip_points_due_before_arrival():
    dt = 0.1
    first = (0.0, 0.05 + dt * np.arange(8))  # arrives at 0, points 0.05 .. 0.75
    second = (0.32, 0.25 + dt * np.arange(8))  # arrives at 0.32: its 0.25 point is past due
    changes = executed_point_times([first, second])
    expected = np.concatenate([0.05 + dt * np.arange(3), 0.35 + dt * np.arange(7)])
    np.testing.assert_allclose(changes, expected)
    # A plan that arrives after the previous one ran out leaves slots missed.
    late = (1.2, 1.15 + dt * np.arange(8))
    _, missed = grid_lateness(executed_point_times([first, late]), dt)
    assert missed == 4  # 0.85, 0.95, 1.05, 1.15 were not executed
