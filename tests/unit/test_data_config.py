"""DataConfig: YAML round trip and validation naming the field."""

import pytest
import yaml

from diffusion_policy_node.data.config import DataConfig, load_data_config

JOINTS = ["j1", "j2", "j3"]


def test_yaml_round_trip_top_level_and_data_section(tmp_path):
    cfg = DataConfig(
        camera_topics=["/cam/front/image_raw", "/cam/wrist/compressed"],
        image_size=(64, 80),
        joint_names=JOINTS,
        action_source="next_state",
        command_type="Float64MultiArray",
        timestamp_source="record",
        dt=0.05,
        episode_split="/episode_marker",
        n_obs_steps=3,
        horizon=12,
        n_action_steps=6,
    )
    flat = tmp_path / "data.yaml"
    flat.write_text(yaml.safe_dump(cfg.to_dict()))
    assert load_data_config(flat) == cfg
    nested = tmp_path / "config.yaml"
    nested.write_text(yaml.safe_dump({"policy": {"horizon": 12}, "data": cfg.to_dict()}))
    loaded = load_data_config(nested)
    assert loaded == cfg and loaded.image_size == (64, 80)
    assert loaded.dt_ns == 50_000_000 and loaded.state_dim == 3 and loaded.n_cameras == 2
    assert loaded.min_episode_steps == 12


def test_defaults_match_the_design_topics():
    cfg = DataConfig(joint_names=JOINTS)
    assert cfg.camera_topics == ["/camera/image_raw"]
    assert cfg.joint_state_topic == "/joint_states"
    assert cfg.command_topic == "/arm_controller/joint_trajectory"
    assert (cfg.action_source, cfg.command_type, cfg.timestamp_source) == (
        "command",
        "JointTrajectory",
        "header",
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("camera_topics", []),
        ("camera_topics", ["camera/no_leading_slash"]),
        ("camera_topics", ["/a", "/a"]),
        ("camera_topics", "/camera/image_raw"),
        ("image_size", (4, 96)),
        ("image_size", (96,)),
        ("joint_state_topic", "joint_states"),
        ("joint_names", []),
        ("joint_names", ["j1", "j1"]),
        ("action_source", "teleop"),
        ("command_type", "Twist"),
        ("timestamp_source", "gps"),
        ("dt", 0.0),
        ("dt", float("nan")),
        ("dt", "0.1"),
        ("episode_split", "markers"),
        ("episode_split", "/joint_states"),
        ("n_obs_steps", 0),
        ("horizon", 2.5),
        ("n_action_steps", 16),
    ],
)
def test_bad_values_name_the_field(field, value):
    values = {"joint_names": JOINTS, field: value}
    with pytest.raises(ValueError, match=f"DataConfig.{field}="):
        DataConfig(**values)


def test_unknown_keys_and_bad_files_are_named(tmp_path):
    path = tmp_path / "data.yaml"
    path.write_text(yaml.safe_dump({"joint_names": JOINTS, "camera_topic": "/cam"}))
    with pytest.raises(ValueError, match=r"data\.yaml.*camera_topic"):
        load_data_config(path)
    path.write_text("joint_names: [j1, j2]\ndt: 0\n")
    with pytest.raises(ValueError, match=r"data\.yaml.*DataConfig\.dt=0"):
        load_data_config(path)
    with pytest.raises(ValueError, match="cannot be read"):
        load_data_config(tmp_path / "missing.yaml")
    path.write_text("[1, 2")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_data_config(path)


def test_content_hash_tracks_every_setting():
    base = DataConfig(joint_names=JOINTS)
    assert base.content_hash() == DataConfig(joint_names=list(JOINTS)).content_hash()
    assert base.content_hash() != DataConfig(joint_names=JOINTS, dt=0.05).content_hash()
    assert base.content_hash() != DataConfig(joint_names=JOINTS[::-1]).content_hash()


def test_window_end_is_checked_and_leaves_the_cache_hash():
    base = DataConfig(joint_names=JOINTS)
    assert base.window_end == "hold"
    chi = DataConfig(joint_names=JOINTS, window_end="action_steps")
    assert chi.content_hash() == base.content_hash()  # same arrays, other windows
    with pytest.raises(ValueError, match="window_end='last'"):
        DataConfig(joint_names=JOINTS, window_end="last")
