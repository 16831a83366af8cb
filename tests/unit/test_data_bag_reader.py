"""Bag round trips: synthetic signals come back on the dt grid with the expected values.

Bags (both storage formats) hold a 30 Hz camera (32x32, padded rows), 200 Hz joint states with
the joint order shuffled per message plus an unconfigured joint, and 10 Hz commands; see
data_fixtures.py for the signals. Expected values are computed from the written message times.
"""

import numpy as np
import pytest

from diffusion_policy_node.data import resample
from diffusion_policy_node.data.bag_reader import find_bags, read_bag

from .data_fixtures import (
    JOINTS,
    command_target,
    expected_jt_action,
    frame_color,
    joint_positions,
    make_config,
    newest,
)

DT_NS = 100_000_000


def expected_grid(truth, use_header=True, with_command=True):
    cams = truth.camera_header_ns if use_header else truth.camera_record_ns
    joints = truth.joint_header_ns if use_header else truth.joint_record_ns
    streams = [*cams.values(), joints]
    if with_command:
        streams.append(truth.command_header_ns if use_header else truth.command_record_ns)
    t0 = max(int(s[0]) for s in streams)
    t_end = min(int(s[-1]) for s in streams)
    return t0 + np.arange((t_end - t0) // DT_NS + 1, dtype=np.int64) * DT_NS


def expected_state(truth, grid, use_header=True):
    times = truth.joint_header_ns if use_header else truth.joint_record_ns
    idx = newest(times, grid)
    return np.stack([joint_positions(int(truth.joint_header_ns[m])) for m in idx])


def expected_images(truth, grid, use_header=True):
    out = []
    for c, topic in enumerate(truth.spec.cameras):
        times = truth.camera_header_ns[topic] if use_header else truth.camera_record_ns[topic]
        out.append([frame_color(c, int(f)) for f in newest(times, grid)])
    return np.array(out, np.uint8).transpose(1, 0, 2)  # (T, N, 3)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_round_trip_joint_trajectory_commands(make_bag, storage):
    truth = make_bag(storage=storage)
    contents = read_bag(truth.path, make_config())
    assert contents.skipped == []
    (ep,) = contents.episodes
    grid = expected_grid(truth)
    assert len(grid) == 19  # t0 = 0.12 s (first command), last command at 2.02 s
    np.testing.assert_array_equal(ep.times_ns, grid)
    assert ep.images.shape == (19, 1, 16, 16, 3) and ep.images.dtype == np.uint8
    assert ep.state.dtype == np.float32 and ep.action.dtype == np.float32
    np.testing.assert_allclose(ep.state, expected_state(truth, grid), atol=1e-6)
    # Constant-colour frames survive the 32x32 -> 16x16 resize exactly.
    colours = expected_images(truth, grid)
    np.testing.assert_array_equal(
        ep.images, np.broadcast_to(colours[:, :, None, None], ep.images.shape)
    )
    np.testing.assert_allclose(
        ep.action, expected_jt_action(truth, grid, DT_NS, use_header=True), atol=1e-6
    )
    assert ep.source == str(truth.path)


def test_golden_values_at_the_first_grid_step(make_bag):
    truth = make_bag()
    (ep,) = read_bag(truth.path, make_config()).episodes
    # t0 = 0.12 s: joints sampled at 0.120 s (200 Hz), frame 2 (stamped 0.1167 s), and the
    # first trajectory (start 0.12 s) as a joint_trajectory_controller executes it 0.1 s
    # later: before its first point (due at 0.27 s, target(0.27 s) + 0.5), 2/3 of the way
    # from the joints at its receipt to that point.
    np.testing.assert_allclose(ep.state[0], [0.036, 0.172, 0.308, 0.444], atol=1e-6)
    assert tuple(ep.images[0, 0, 0, 0]) == (2, 20, 14)
    first_point = command_target(0, 1_700_000_000_270_000_000)
    np.testing.assert_allclose(first_point, [0.581, 0.762, 0.943, 1.124], atol=1e-6)
    expected = ep.state[0] + 2 / 3 * (first_point - ep.state[0])
    np.testing.assert_allclose(ep.action[0], expected, atol=1e-6)
    np.testing.assert_allclose(ep.action[0], [0.399333, 0.565333, 0.731333, 0.897333], atol=1e-5)


def test_record_timestamps_use_receive_times(make_bag):
    truth = make_bag(storage="sqlite3")
    (ep,) = read_bag(truth.path, make_config(timestamp_source="record")).episodes
    grid = expected_grid(truth, use_header=False)
    np.testing.assert_array_equal(ep.times_ns, grid)
    np.testing.assert_allclose(ep.state, expected_state(truth, grid, False), atol=1e-6)
    colours = expected_images(truth, grid, False)
    np.testing.assert_array_equal(ep.images[:, :, 5, 5], colours)
    np.testing.assert_allclose(
        ep.action, expected_jt_action(truth, grid, DT_NS, use_header=False), atol=1e-6
    )


def test_zero_trajectory_stamps_put_the_whole_bag_on_record_time(make_bag):
    # docs/data.md#time-base-and-gaps: one time base per bag. Commands stamped 0 ("start on
    # receipt") have only their record time, so every topic is timed by record time, never a mix
    # of the two.
    truth = make_bag(command_zero_stamp=True)
    contents = read_bag(truth.path, make_config())
    (ep,) = contents.episodes
    (same,) = read_bag(truth.path, make_config(timestamp_source="record")).episodes
    for name in ("images", "state", "action", "times_ns"):
        np.testing.assert_array_equal(getattr(ep, name), getattr(same, name))
    assert ep.times_ns[0] == expected_grid(truth, use_header=False)[0]
    assert contents.summary["time_base"] == "record"
    assert (
        "/arm_controller/joint_trajectory has header.stamp = 0"
        in (contents.summary["time_base_note"])
    )


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bare_storage_file_reads_like_the_folder(make_bag, storage):
    truth = make_bag(storage=storage)
    (file,) = [p for p in truth.path.iterdir() if p.suffix in (".mcap", ".db3")]
    (a,) = read_bag(truth.path, make_config()).episodes
    (b,) = read_bag(file, make_config()).episodes
    for name in ("images", "state", "action", "times_ns"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert find_bags([truth.path.parent]) == [truth.path]
    assert find_bags([file]) == [file]


def test_float64_commands_two_bgr_cameras(make_bag):
    cameras = ("/cam/front/image_raw", "/cam/wrist/image_raw")
    truth = make_bag(command_type="Float64MultiArray", encoding="bgr8", cameras=cameras)
    cfg = make_config(truth.spec)
    assert cfg.command_type == "Float64MultiArray" and cfg.n_cameras == 2
    # Float64MultiArray has no header: mapped onto the header clock by the joint states'
    # header - record offset (-1 ms), the other topics keep their stamps.
    mapped = read_bag(truth.path, cfg)
    assert mapped.summary["time_base"] == "header"
    assert mapped.summary["mapped_topics"] == [cfg.command_topic]
    (ep,) = mapped.episodes
    command_ns = truth.command_record_ns - truth.spec.joint_latency_ns
    cams = [truth.camera_header_ns[c][0] for c in cameras]
    assert ep.times_ns[0] == max(*cams, truth.joint_header_ns[0], command_ns[0])
    idx = newest(command_ns, ep.times_ns)
    want = np.stack([command_target(int(m), int(truth.command_header_ns[m])) for m in idx])
    np.testing.assert_allclose(ep.action, want, atol=1e-6)
    np.testing.assert_allclose(ep.state, expected_state(truth, ep.times_ns), atol=1e-6)
    # timestamp_source: record times every topic by its record time.
    contents = read_bag(truth.path, make_config(truth.spec, timestamp_source="record"))
    (ep,) = contents.episodes
    assert contents.summary["time_base"] == "record"
    cams = [truth.camera_record_ns[c][0] for c in cameras]
    t0 = max(*cams, truth.joint_record_ns[0], truth.command_record_ns[0])
    assert ep.times_ns[0] == t0
    idx = newest(truth.command_record_ns, ep.times_ns)
    want = np.stack([command_target(int(m), int(truth.command_header_ns[m])) for m in idx])
    np.testing.assert_allclose(ep.action, want, atol=1e-6)
    np.testing.assert_array_equal(
        ep.images[:, :, 3, 3], expected_images(truth, ep.times_ns, use_header=False)
    )
    np.testing.assert_allclose(
        ep.state, expected_state(truth, ep.times_ns, use_header=False), atol=1e-6
    )


def test_next_state_actions_are_the_following_joint_positions(make_bag):
    truth = make_bag(command_type=None)
    cfg = make_config(truth.spec)
    assert cfg.action_source == "next_state"
    (ep,) = read_bag(truth.path, cfg).episodes
    full = expected_grid(truth, with_command=False)
    np.testing.assert_array_equal(ep.times_ns, full[:-1])
    np.testing.assert_allclose(ep.state, expected_state(truth, full[:-1]), atol=1e-6)
    np.testing.assert_allclose(ep.action, expected_state(truth, full[1:]), atol=1e-6)


@pytest.mark.parametrize("encoding", ["png", "jpeg"])
def test_compressed_camera(make_bag, encoding):
    truth = make_bag(encoding=encoding, cameras=("/camera/image_raw/compressed",))
    (ep,) = read_bag(truth.path, make_config(truth.spec)).episodes
    colours = expected_images(truth, ep.times_ns).astype(int)
    got = ep.images[:, :, 8, 8].astype(int)
    tol = 0 if encoding == "png" else 6  # jpeg's colour subsampling shifts flat colours a bit
    assert np.abs(got - colours).max() <= tol


def test_marker_topic_splits_episodes_and_skips_short_ones(make_bag):
    truth = make_bag(duration_s=4.0, marker_times_s=(0.7, 2.2))
    cfg = make_config(truth.spec)
    assert cfg.episode_split == "/episode_marker"
    contents = read_bag(truth.path, cfg)
    # [0, 0.7 s) has only ~6 grid steps (< horizon 8): skipped and reported.
    assert [s.source for s in contents.skipped] == [f"{truth.path} [episode 1]"]
    assert "fewer than min_episode_steps=8" in contents.skipped[0].reason
    assert [e.source for e in contents.episodes] == [
        f"{truth.path} [episode 2]",
        f"{truth.path} [episode 3]",
    ]
    for ep, marker_s in zip(contents.episodes, (0.7, 2.2), strict=True):
        marker = 1_700_000_000_000_000_000 + round(marker_s * 1e9)
        # Each stream starts afresh after the marker (by record time); header stamps time them.
        firsts = [
            truth.camera_header_ns["/camera/image_raw"][
                truth.camera_record_ns["/camera/image_raw"] > marker
            ][0],
            truth.joint_header_ns[truth.joint_record_ns > marker][0],
            truth.command_header_ns[truth.command_record_ns > marker][0],
        ]
        assert ep.times_ns[0] == max(firsts)
        np.testing.assert_allclose(ep.state, expected_state(truth, ep.times_ns), atol=1e-6)
    assert len(contents.episodes[0]) == 15 and len(contents.episodes[1]) == 18


def test_only_frames_the_grid_picks_are_decoded(make_bag, monkeypatch):
    truth = make_bag(duration_s=3.0)
    calls = []
    real = resample.decode_raw_image

    def counting(*args, **kwargs):
        calls.append(kwargs["where"])
        return real(*args, **kwargs)

    monkeypatch.setattr(resample, "decode_raw_image", counting)
    (ep,) = read_bag(truth.path, make_config()).episodes
    n_frames = len(truth.camera_header_ns["/camera/image_raw"])
    assert n_frames == 89 and len(ep) == 29
    # One decode per picked frame, plus at most the newest frame at the end.
    assert len(ep) <= len(calls) <= len(ep) + 1
    assert len(set(calls)) == len(calls)


def test_joint_order_is_taken_from_each_message(make_bag):
    # A fixed order different from the configured one, with the extra joint first.
    order = ["gripper_finger", "wrist", "shoulder_pan", "elbow", "shoulder_lift"]
    truth = make_bag(joint_order=order)
    (ep,) = read_bag(truth.path, make_config()).episodes
    np.testing.assert_allclose(ep.state, expected_state(truth, ep.times_ns), atol=1e-6)
    assert JOINTS == ["shoulder_pan", "shoulder_lift", "elbow", "wrist"]
    assert np.all(np.diff(ep.state, axis=0) > 0)  # every configured joint ramps up
