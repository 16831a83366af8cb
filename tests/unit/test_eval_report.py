"""dp-eval's ROS-free parts: the episode video, the summary figure and numbers, argument checks."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from diffusion_policy_node.eval import evaluate
from diffusion_policy_node.eval.media import (
    EpisodeVideo,
    failure_reason,
    outcome,
    plot_eval_summary,
)
from diffusion_policy_node.policy.checkpoint import CheckpointError


def _record(seed: int, success: bool, collided: bool, time: float, side: str | None) -> dict:
    rec = {"seed": seed, "success": success, "collided": collided, "time": time,
           "passed_side": side, "command_delay_p50_ms": 4.0 + seed % 2,
           "command_delay_max_ms": 10.0 + seed}  # fmt: skip
    rec["outcome"] = outcome(rec)
    return rec


RECORDS = [
    _record(1000, True, False, 3.0, "left"),
    _record(1001, True, False, 4.0, "right"),
    _record(1002, False, True, 1.2, None),
    _record(1003, False, False, 10.0, "left"),
]


def test_outcome_names_success_collision_timeout():
    assert [r["outcome"] for r in RECORDS] == ["success", "success", "collision", "timeout"]


def test_a_robot_s_failure_reason_names_the_outcome_and_is_counted():
    reports = [
        {"done": True, "success": False, "failure": "closed off target"},
        {"done": True, "success": False, "failure": "  "},
        {"done": True, "success": True, "failure": "closed off target"},
        {"done": True, "success": False, "failure": 3},
        {"done": True, "success": False},
    ]
    assert [failure_reason(r) for r in reports] == ["closed off target", None, None, "3", None]
    records = []
    for seed, reason in enumerate(("closed off target", None, "closed off target")):
        rec = {"seed": seed, "success": False, "collided": False, "time": 2.0,
               "failure_reason": reason}  # fmt: skip
        rec["outcome"] = outcome(rec)
        records.append(rec)
    assert [r["outcome"] for r in records] == ["failure", "timeout", "failure"]
    s = evaluate.summarize(records, "ckpt", 1.0)
    assert (s["failures"], s["timeouts"], s["collisions"]) == (2, 1, 0)
    assert s["failure_reasons"] == {"closed off target": 2}
    assert "failure_reasons" not in evaluate.summarize(RECORDS, "ckpt", 1.0)


def test_summary_numbers():
    s = evaluate.summarize(RECORDS, "ckpt", wall_s=12.34)
    assert s["episodes"] == 4 and s["successes"] == 2
    assert s["success_rate"] == 0.5
    assert s["collisions"] == 1 and s["timeouts"] == 1 and s["failures"] == 0
    assert s["mean_time_to_success_s"] == pytest.approx(3.5)
    assert (s["passed_left"], s["passed_right"]) == (2, 1)
    assert s["seeds"] == [1000, 1003]
    assert s["command_delay_p50_ms"] == pytest.approx(4.5)
    assert s["command_delay_max_ms"] == 1013.0
    assert s["wall_s"] == 12.3
    line = evaluate.headline(s)
    assert line.startswith("dp-eval: success 2/4 (50%)") and "mean time to success 3.50 s" in line
    assert evaluate.summarize([], "ckpt", 0.0)["success_rate"] == 0.0


def test_video_has_every_frame_plus_the_outcome_hold(tmp_path: Path):
    video = EpisodeVideo(tmp_path / "v.mp4", fps=10.0, scale=2)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (24, 32, 3), dtype=np.uint8) for _ in range(7)]
    video.add_episode(frames, "seed 1", "success")
    video.add_episode(frames[:3], "seed 2", "collision")
    path = video.write()
    assert path == tmp_path / "v.mp4" and path.stat().st_size > 0
    cap = cv2.VideoCapture(str(path))
    try:
        assert cap.get(cv2.CAP_PROP_FRAME_WIDTH) == 64
        assert cap.get(cv2.CAP_PROP_FRAME_HEIGHT) == 48
        assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == 7 + 5 + 3 + 5  # 0.5 s hold at 10 fps
    finally:
        cap.release()
    assert not list(tmp_path.glob(".*tmp*"))


def test_video_rejects_bad_frames_and_writes_nothing_without_frames(tmp_path: Path):
    video = EpisodeVideo(tmp_path / "v.mp4", fps=30.0)
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        video.add_episode([np.zeros((8, 8), np.uint8)], "seed 0", "success")
    assert video.write() is None and not (tmp_path / "v.mp4").exists()
    with pytest.raises(ValueError, match="fps"):
        EpisodeVideo(tmp_path / "w.mp4", fps=0.0)


def test_summary_png_is_written(tmp_path: Path):
    summary = evaluate.summarize(RECORDS, "ckpt", 1.0)
    png = plot_eval_summary(RECORDS, summary, tmp_path / "s.png")
    image = cv2.imread(str(png))
    assert image is not None and image.shape[0] > 100 and image.shape[1] > 300


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--episodes", "0"], "--episodes 0"),
        (["--seed", "-1"], "--seed -1"),
        (["--real-time-factor", "0"], "only for --expert"),
        (["--real-time-factor", "1000"], "--real-time-factor 1000"),
        (["--video-episodes", "-2"], "--video-episodes -2"),
    ],
)
def test_bad_arguments_are_named_and_start_nothing(argv, message, tmp_path, capsys):
    out = tmp_path / "out"
    assert evaluate.main([*argv, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_missing_checkpoint_is_a_clear_error(tmp_path, capsys):
    out = tmp_path / "out"
    assert evaluate.main(["--checkpoint", str(tmp_path / "nope"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "does not exist" in err
    assert not out.exists()


def test_bundled_checkpoint_lookup(tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match="models/no_such_model"):
        evaluate.bundled_checkpoint("no_such_model")
    share = tmp_path / "install" / "share" / "diffusion_policy_node" / "models" / "m"
    share.mkdir(parents=True)
    (share / "config.yaml").write_text("{}\n")
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(tmp_path / "install"))
    assert evaluate.bundled_checkpoint("m") == share


def test_graph_requirements_name_what_is_missing():
    from diffusion_policy_node.eval.graph_requirements import (
        GraphRequirements,
        GraphSnapshot,
        missing_on_graph,
        requirements_of,
    )
    from diffusion_policy_node.policy.checkpoint import read_config

    req = requirements_of(*read_config(evaluate.bundled_checkpoint()))
    assert GraphRequirements.from_json(req.to_json()) == req
    good = GraphSnapshot(
        publishers={"/camera/image_raw": ["sensor_msgs/msg/Image"],
                    "/joint_states": ["sensor_msgs/msg/JointState"]},
        subscribers={"/arm_controller/joint_trajectory": ["trajectory_msgs/msg/JointTrajectory"]},
        joint_names=["joint3", "joint1", "joint2", "extra"],
    )  # fmt: skip
    assert missing_on_graph(req, good) == []
    bad = GraphSnapshot(
        publishers={"/camera/image_raw": ["sensor_msgs/msg/CompressedImage"],
                    "/joint_states": ["sensor_msgs/msg/JointState"]},
        subscribers={"/arm_controller/joint_trajectory": ["std_msgs/msg/Float64MultiArray"]},
        joint_names=["joint1"],
    )  # fmt: skip
    lines = missing_on_graph(req, bad)
    assert any("/camera/image_raw" in x and "not sensor_msgs/msg/Image" in x for x in lines)
    assert any("['joint2', 'joint3'] not in /joint_states" in x for x in lines)
    assert any("subscribed as ['std_msgs/msg/Float64MultiArray']" in x for x in lines)
    nothing = missing_on_graph(req, GraphSnapshot())
    assert len(nothing) == 3 and "nobody subscribes" in nothing[2]
    unseen = GraphSnapshot(publishers=good.publishers, subscribers=good.subscribers)
    (line,) = missing_on_graph(req, unseen)
    assert line.startswith("joint states /joint_states: published, but no message arrived")


def test_command_groups_default_for_configs_without_groups():
    from types import SimpleNamespace

    from diffusion_policy_node.eval.graph_requirements import command_groups

    (group,) = command_groups(SimpleNamespace(joint_names=["a", "b"], action_groups=None))
    assert (group.joints, group.topic) == (("a", "b"), "/arm_controller/joint_trajectory")


def test_terminal_ask_reads_a_line_times_out_and_sees_eof(tmp_path: Path):
    import io
    import os

    from diffusion_policy_node.eval.operator import terminal_ask

    r, w = os.pipe()
    with os.fdopen(r) as stdin, os.fdopen(w, "w") as writer:
        out = io.StringIO()
        assert terminal_ask("success? [y/n]", 0.01, stdin, out) is None  # nothing typed
        writer.write("y\n")
        writer.flush()
        assert terminal_ask("success? [y/n]", 5.0, stdin, out) == "y"
        assert "dp-eval: success? [y/n]" in out.getvalue() and "time up" in out.getvalue()
        writer.close()
        with pytest.raises(EOFError):
            terminal_ask("reset", None, stdin, out)


def test_robot_options_are_checked():
    with pytest.raises(ValueError, match="--expert and --compare-expert"):
        evaluate._check_args(evaluate.build_parser().parse_args(["--robot", "r", "--expert"]))
    with pytest.raises(ValueError, match="--sim-time is for"):
        evaluate._check_args(evaluate.build_parser().parse_args(["--sim-time"]))
    with pytest.raises(ValueError, match="--graph-timeout"):
        evaluate._check_args(
            evaluate.build_parser().parse_args(["--operator", "--graph-timeout", "0"])
        )


def test_the_policy_node_beside_dp_evals_own_pick_place_sim_waits_for_its_urdf():
    # Without the URDF the limits fall back to the demonstrated range; the sim can take longer
    # to publish /robot_description than the node's default 2 s.
    def node_args(*argv: str) -> list[str]:
        args = evaluate.build_parser().parse_args(list(argv))
        return evaluate._policy_node_args(args, Path("/ckpt"), sim_time=True)

    from diffusion_policy_node.ros.sim_node import ROBOT_DESCRIPTIONS

    assert set(evaluate.TASKS_WITH_URDF) == set(ROBOT_DESCRIPTIONS)  # the sim's own list
    wait = f"robot_description_timeout:={evaluate.OWN_SIM_DESCRIPTION_WAIT_S}"
    assert wait in node_args("--task", "pick_place")
    # reach has no URDF: the demonstrated range, not a wait that would fail configure
    assert "robot_description_topic:=''" in node_args("--task", "reach")
    # another robot: its own robot_state_publisher, waited for (the node's default) ...
    assert not any("robot_description" in a for a in node_args("--robot", "arm"))
    # ... or its URDF file
    urdf = node_args("--robot", "arm", "--urdf", "/robots/arm.urdf")
    assert "robot_description_file:=/robots/arm.urdf" in urdf
    # a --policy-param comes later on the command line, so it wins
    args = node_args("--task", "pick_place", "--policy-param", "robot_description_timeout:=5.0")
    assert args.index("robot_description_timeout:=5.0") > args.index(wait)


def test_each_task_defaults_to_its_own_bundled_checkpoint():
    # dp-eval --task pick_place without --checkpoint used the reach model, whose joints the
    # pick-place robot does not have: the policy node refused to start.
    from diffusion_policy_node.policy.checkpoint import read_config
    from diffusion_policy_node.sim.engine import TASKS

    assert set(evaluate.BUNDLED_MODELS) == set(TASKS)
    for task, name in evaluate.BUNDLED_MODELS.items():
        config, _ = read_config(evaluate.bundled_checkpoint(name))
        spec = TASKS[task]
        assert set(config.camera_topics) <= set(spec.camera_topics), task
        assert set(spec.task.joint_names) <= set(config.joint_names), task


def test_headline_takes_a_robot_that_reports_only_some_optional_keys():
    records = [dict(r) for r in RECORDS]
    for r in records:
        del r["command_delay_max_ms"]  # a robot reporting the p50 only
    s = evaluate.summarize(records, "ckpt", wall_s=3.0)
    assert s["command_delay_max_ms"] is None
    line = evaluate.headline(s)
    assert "command delay p50 4 ms" in line and "max" not in line


def test_episode_records_carry_per_episode_counters_and_the_summary_sums_them():
    from diffusion_policy_node.eval.media import episode_counters

    totals = [
        {"inference_count": 16, "velocity_clamps": 23, "overruns": 0},
        {"inference_count": 32, "velocity_clamps": 56, "overruns": 1},
        {"inference_count": 48, "velocity_clamps": 83, "overruns": 1},
    ]
    before = {"inference_count": 0, "velocity_clamps": 0, "overruns": 0}
    records = []
    for rec, after in zip(RECORDS, totals, strict=False):
        records.append({**rec, **episode_counters(before, after)})
        before = after
    assert [r["inference_count"] for r in records] == [16, 16, 16]
    assert [r["velocity_clamps"] for r in records] == [23, 33, 27]
    assert records[0]["dry_ticks"] is None  # not reported by this node
    s = evaluate.summarize(records, "ckpt", 1.0)
    assert (s["inference_count"], s["velocity_clamps"], s["overruns"]) == (48, 83, 1)
    assert "dry_ticks" not in s
    # A node restarted between episodes: its totals start again from zero.
    assert episode_counters({"overruns": 5}, {"overruns": 2})["overruns"] == 2


def test_tick_counts_are_the_episode_s_own_as_the_node_counts_them_from_start():
    """The node clears its timing statistics at ~/start, which dp-eval calls every episode:
    the status after an episode is that episode's count, not an increase over the last one."""
    from diffusion_policy_node.eval.media import episode_counters

    previous = {"timed_ticks": 25, "missed_ticks": 2, "inference_count": 16}  # episode 0
    after = {"timed_ticks": 31, "missed_ticks": 0, "inference_count": 22}  # episode 1
    counters = episode_counters(previous, after)
    assert counters["timed_ticks"] == 31 and counters["missed_ticks"] == 0
    assert counters["inference_count"] == 6  # a running total


def test_a_failed_graph_check_exits_non_zero_with_the_reason(tmp_path, monkeypatch, capsys):
    reason = "the robot does not offer what the checkpoint needs: /camera/image_raw: no publisher"
    monkeypatch.setattr(evaluate, "run_episodes", lambda *a, **k: ([], None, reason))
    assert evaluate.main(["--expert", "--out", str(tmp_path / "eval")]) == 1
    err = capsys.readouterr().err
    assert f"dp-eval: error: {reason}" in err and "success 0/0" not in err
