"""Time base, outlier stamps and gaps: right data or a counted report."""

import logging

import numpy as np
import pytest

from diffusion_policy_node.data.bag_reader import read_bag
from diffusion_policy_node.data.config import DataConfig

from .data_fixtures import (
    CAMERA,
    JOINT_TOPIC,
    JOINTS,
    JT_TOPIC,
    T_START_NS,
    frame_color,
    joint_positions,
    make_config,
    newest,
)

MS = 1_000_000


def test_zero_command_stamps_with_late_sensor_stamps_use_one_time_base(make_bag, caplog):
    # Sensor stamps 40 ms behind their record times, trajectory commands
    # stamped 0. Mixing would time the commands by record time and the sensors 40 ms earlier.
    truth = make_bag(camera_latency_ns=40 * MS, joint_latency_ns=40 * MS, command_zero_stamp=True)
    with caplog.at_level(logging.WARNING):
        contents = read_bag(truth.path, make_config())
    (ep,) = contents.episodes
    (by_record,) = read_bag(truth.path, make_config(timestamp_source="record")).episodes
    for name in ("images", "state", "action", "times_ns"):
        np.testing.assert_array_equal(getattr(ep, name), getattr(by_record, name))
    summary = contents.summary
    assert summary["time_base"] == "record"
    assert f"{JT_TOPIC} has header.stamp = 0" in summary["time_base_note"]
    # The offset the fix absorbs is reported, per topic.
    assert summary["clock_offsets_ms"][CAMERA]["mean_ms"] == pytest.approx(-40.0)
    assert summary["clock_offsets_ms"][JOINT_TOPIC]["max_ms"] == pytest.approx(-40.0)
    assert JT_TOPIC not in summary["clock_offsets_ms"]
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert str(truth.path) in warning and JT_TOPIC in warning and "-40.0 ms" in warning


def test_fully_stamped_bag_is_timed_by_header_and_reports_its_offsets(make_bag):
    truth = make_bag()
    summary = read_bag(truth.path, make_config()).summary
    assert summary["time_base"] == "header"
    offsets = summary["clock_offsets_ms"]
    assert offsets[CAMERA]["mean_ms"] == pytest.approx(-8.0)
    assert offsets[JOINT_TOPIC]["min_ms"] == pytest.approx(-1.0)
    assert offsets[JT_TOPIC]["mean_ms"] == pytest.approx(-3.0)


@pytest.mark.parametrize("shift_s", [100, -100])
def test_one_outlier_stamp_is_dropped_without_freezing_the_state(make_bag, shift_s):
    clean = make_bag("clean", duration_s=4.0)
    (ref,) = read_bag(clean.path, make_config()).episodes
    m = 201  # stamped 1.005 s: never picked by the grid (steps at 0.12 s + k * 0.1 s)
    assert m not in newest(clean.joint_header_ns, ref.times_ns)
    truth = make_bag("outlier", duration_s=4.0, joint_stamp_shift_ns=((m, shift_s * 10**9),))
    contents = read_bag(truth.path, make_config())
    (ep,) = contents.episodes
    np.testing.assert_array_equal(ep.times_ns, ref.times_ns)
    np.testing.assert_array_equal(ep.state, ref.state)  # nothing frozen after the outlier
    (counts,) = contents.summary["skipped_messages"].values()
    assert sum(counts.values()) == 1, counts
    reason = "stamped far ahead" if shift_s > 0 else "older than the previous message"
    assert reason in next(iter(counts))


def test_a_burst_of_future_stamps_is_dropped_as_well(make_bag):
    clean = make_bag("clean", duration_s=4.0)
    (ref,) = read_bag(clean.path, make_config()).episodes
    shifts = tuple((m, 100 * 10**9) for m in (201, 202, 203))
    contents = read_bag(make_bag("burst", duration_s=4.0, joint_stamp_shift_ns=shifts).path,
                        make_config())  # fmt: skip
    np.testing.assert_array_equal(contents.episodes[0].state, ref.state)
    assert contents.summary["skipped_messages"][JOINT_TOPIC] == {
        "stamped far ahead of the messages after it (outlier or clock jump)": 3
    }


def test_a_camera_drop_out_longer_than_max_gap_splits_the_episode(make_bag, caplog):
    truth = make_bag(duration_s=4.0, camera_dropout_s=(1.0, 2.0))
    with caplog.at_level(logging.WARNING):
        contents = read_bag(truth.path, make_config())
    summary = contents.summary
    # Grid 0.12 .. 3.92 s; the last frame before the gap is stamped 0.983 s, the next 2.017 s:
    # steps later than 0.983 + max_gap (3 * dt = 0.3 s) and before 2.017 s are dropped.
    (gap,) = summary["gaps"]
    assert gap["topic"] == CAMERA and gap["length_s"] == pytest.approx(1.033, abs=1e-3)
    assert gap["steps_dropped"] == 7 and summary["gap_steps_dropped"] == 7
    first, second = contents.episodes
    assert (len(first), len(second)) == (12, 20)
    assert first.source == f"{truth.path} [part 1]" and second.source == f"{truth.path} [part 2]"
    assert summary["episodes"] == 2 and summary["steps"] == 32
    assert (second.times_ns[0] - T_START_NS) == 2_020_000_000
    for ep in (first, second):
        frames = newest(truth.camera_header_ns[CAMERA], ep.times_ns)
        assert np.all(ep.times_ns - truth.camera_header_ns[CAMERA][frames] <= 300 * MS)
        colours = np.array([frame_color(0, int(f)) for f in frames], np.uint8)
        np.testing.assert_array_equal(ep.images[:, 0, 4, 4], colours)
        js = newest(truth.joint_header_ns, ep.times_ns)
        want = np.stack([joint_positions(int(truth.joint_header_ns[m])) for m in js])
        np.testing.assert_allclose(ep.state, want, atol=1e-6)
    assert "gap(s) longer than max_gap" in caplog.text and CAMERA in caplog.text


def test_a_short_drop_out_or_a_larger_max_gap_is_filled(make_bag):
    short = make_bag("short", duration_s=4.0, camera_dropout_s=(1.0, 1.2))
    contents = read_bag(short.path, make_config())
    assert len(contents.episodes) == 1 and contents.summary["gaps"] == []
    long = make_bag("long", duration_s=4.0, camera_dropout_s=(1.0, 2.0))
    contents = read_bag(long.path, make_config(max_gap=1.5))
    assert len(contents.episodes) == 1 and contents.summary["gaps"] == []
    assert len(contents.episodes[0]) == 39


def test_a_part_shorter_than_the_horizon_is_skipped_and_counted(make_bag):
    truth = make_bag(duration_s=4.0, camera_dropout_s=(0.4, 1.5))
    contents = read_bag(truth.path, make_config())
    (ep,) = contents.episodes
    (short,) = contents.summary["skipped_episodes"]
    assert short["source"] == f"{truth.path} [part 1]"
    assert "between gaps" in short["reason"]
    assert "fewer than min_episode_steps=8" in short["reason"]
    assert ep.source == f"{truth.path} [part 2]"


def test_joint_state_gap_with_next_state_actions(make_bag):
    # No joint states in [1.0, 2.0) s: no step inside the gap is kept, and the last step before
    # it does not take its next-state action from a repeated (stale) sample.
    truth = make_bag(duration_s=4.0, command_type=None, joint_dropout_s=(1.0, 2.0))
    contents = read_bag(truth.path, make_config(truth.spec))
    (gap,) = contents.summary["gaps"]
    assert gap["topic"] == JOINT_TOPIC and gap["length_s"] == pytest.approx(1.005)
    first, second = contents.episodes
    for ep in (first, second):
        full = np.append(ep.times_ns, ep.times_ns[-1] + 100 * MS)
        js = newest(truth.joint_header_ns, full)
        assert np.all(full - truth.joint_header_ns[js] <= 300 * MS)
        want = np.stack([joint_positions(int(truth.joint_header_ns[m])) for m in js])
        np.testing.assert_allclose(ep.state, want[:-1], atol=1e-6)
        np.testing.assert_allclose(ep.action, want[1:], atol=1e-6)


def test_max_gap_is_validated():
    with pytest.raises(ValueError, match=r"DataConfig\.max_gap=0\.05"):
        DataConfig(joint_names=JOINTS, dt=0.1, max_gap=0.05)
    with pytest.raises(ValueError, match="max_gap"):
        DataConfig(joint_names=JOINTS, max_gap="long")
    assert DataConfig(joint_names=JOINTS, dt=0.05).max_gap_ns == 150_000_000
