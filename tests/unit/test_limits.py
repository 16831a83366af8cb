"""Joint limits: parameters over the URDF over the demonstrated range (with a span floor)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from diffusion_policy_node.runtime.limits import (
    DEMONSTRATIONS,
    PARAMETER,
    URDF,
    parse_urdf,
    read_urdf_file,
    resolve_limits,
)
from diffusion_policy_node.runtime.settings import NodeSettings, PolicyNodeParams, resolve_settings
from tests.factories import tiny_config

JOINTS = ["a", "b", "c"]
AMIN, AMAX = np.array([-1.0, 0.0, 2.0]), np.array([1.0, 0.5, 2.0])
ROBOT = """<?xml version="1.0"?>
<robot name="r">
  <link name="base"/><link name="l1"/><link name="l2"/><link name="l3"/>
  <joint name="a" type="revolute"><parent link="base"/><child link="l1"/>
    <limit lower="-3.0" upper="3.0" velocity="2.5" effort="10"/></joint>
  <joint name="b" type="continuous"><parent link="l1"/><child link="l2"/>
    <limit velocity="1.5" effort="10"/></joint>
  <joint name="c" type="prismatic"><parent link="l2"/><child link="l3"/>
    <limit lower="0.0" upper="0.04" velocity="0.1" effort="10"/></joint>
</robot>
"""


def _settings(**params: object) -> NodeSettings:
    config = tiny_config(JOINTS, ["/cam"], image_size=(16, 16), crop_shape=None)
    return resolve_settings(PolicyNodeParams(checkpoint="/x", **params), config)


def test_demonstrated_range_with_margin_and_a_span_floor() -> None:
    limits, sources = resolve_limits(_settings(), AMIN, AMAX)
    # a: [-1, 1] +- 10 %; b: [0, 0.5] +- 0.05; c never moved: the 0.2 floor, centred
    np.testing.assert_allclose(limits.lower, [-1.2, -0.05, 1.9])
    np.testing.assert_allclose(limits.upper, [1.2, 0.55, 2.1])
    np.testing.assert_allclose(limits.max_velocity, limits.upper - limits.lower)
    assert sources.position == (DEMONSTRATIONS,) * 3
    floor = resolve_limits(_settings(min_limit_span=1.0), AMIN, AMAX)[0]
    np.testing.assert_allclose(floor.lower, [-1.2, -0.25, 1.5])


def test_the_urdf_wins_over_the_demonstrations() -> None:
    limits, sources = resolve_limits(_settings(), AMIN, AMAX, parse_urdf(ROBOT, "test"))
    np.testing.assert_allclose(limits.lower, [-3.0, -0.05, 0.0])
    np.testing.assert_allclose(limits.upper, [3.0, 0.55, 0.04])
    np.testing.assert_allclose(limits.max_velocity, [2.5, 1.5, 0.1])
    # the continuous joint keeps the demonstrated range but takes the URDF's velocity
    assert sources.position == (URDF, DEMONSTRATIONS, URDF)
    assert sources.velocity == (URDF, URDF, URDF)
    assert "position from demonstrations: ['b']" in sources.describe()


def test_parameters_win_over_the_urdf() -> None:
    s = _settings(joint_upper_limits=(0.5, 0.4, 0.03), max_joint_velocity=(0.25,))
    limits, sources = resolve_limits(s, AMIN, AMAX, parse_urdf(ROBOT, "test"))
    np.testing.assert_allclose(limits.upper, [0.5, 0.4, 0.03])
    np.testing.assert_allclose(limits.lower, [-3.0, -0.05, 0.0])  # not given: the URDF's
    # c's URDF velocity (0.1) is below the parameter: nothing widens beyond a URDF limit
    np.testing.assert_allclose(limits.max_velocity, [0.25, 0.25, 0.1])
    assert sources.position == (PARAMETER,) * 3 and sources.velocity == (PARAMETER,) * 3
    assert any("max_joint_velocity[2]=0.25 is above the URDF's" in w for w in sources.warnings)
    with pytest.raises(ValueError, match="lower must be < upper"):
        resolve_limits(_settings(joint_upper_limits=(-5.0, 1.0, 3.0)), AMIN, AMAX)


def test_a_urdf_without_a_commanded_joint_is_an_error_naming_it() -> None:
    urdf = parse_urdf(ROBOT.replace('name="b"', 'name="other"'), "test")
    with pytest.raises(ValueError, match=r"topic /robot_description has no joint\(s\) \['b'\]"):
        resolve_limits(_settings(), AMIN, AMAX, urdf, "topic /robot_description")


@pytest.mark.parametrize(
    "text", ["<robot name='r'><joint", "not xml at all", "<robot name='r'></robot>"]
)
def test_an_unparsable_urdf_is_named(text: str) -> None:
    with pytest.raises(ValueError, match="robot description topic /robot_description"):
        parse_urdf(text, "topic /robot_description")


def test_a_urdf_file_that_cannot_be_read_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"robot_description_file.*cannot be read"):
        read_urdf_file(tmp_path / "missing.urdf")
    path = tmp_path / "robot.urdf"
    path.write_text(ROBOT)
    assert sorted(read_urdf_file(path)) == JOINTS


def test_dp_info_prints_the_limits_a_checkpoint_would_get(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import json

    from diffusion_policy_node.runtime.info import main

    ckpt = Path(__file__).resolve().parents[2] / "models" / "sim_arm_diffusion"
    assert main([str(ckpt)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [g["name"] for g in info["action_groups"]] == ["arm"]
    assert {v["position_from"] for v in info["limits"].values()} == {DEMONSTRATIONS}
    urdf = tmp_path / "arm.urdf"
    urdf.write_text(
        ROBOT.replace('"a"', '"joint1"').replace('"b"', '"joint2"').replace('"c"', '"joint3"')
    )
    assert main([str(ckpt), "--urdf", str(urdf)]) == 0
    limits = json.loads(capsys.readouterr().out)["limits"]
    assert limits["joint1"]["upper"] == 3.0 and limits["joint1"]["position_from"] == URDF
    assert limits["joint3"]["max_velocity"] == pytest.approx(0.1)
    missing = tmp_path / "other.urdf"
    missing.write_text(ROBOT)
    assert main([str(ckpt), "--urdf", str(missing)]) == 2
    assert "has no joint(s) ['joint1', 'joint2', 'joint3']" in capsys.readouterr().err


def _robot(joint_c: str) -> str:
    """ROBOT with joint c (the commanded gripper) replaced by `joint_c`."""
    head, rest = ROBOT.split('  <joint name="c"')
    tail = rest.split("</joint>", 1)[1]
    return head + joint_c + tail


@pytest.mark.parametrize(
    ("joint_c", "reason"),
    [
        (
            '<joint name="c" type="prismatic"><parent link="l2"/><child link="l3"/></joint>',
            "joint 'c': is prismatic but has no <limit> in the URDF",
        ),
        (
            '<joint name="c" type="prismatic"><parent link="l2"/><child link="l3"/>'
            '<limit lower="0.04" upper="0.0" velocity="0.1" effort="1"/></joint>',
            "joint 'c': URDF lower=0.04 > upper=0",
        ),
        (
            '<joint name="c" type="prismatic"><parent link="l2"/><child link="l3"/>'
            '<limit lower="nan" upper="0.04" velocity="0.1" effort="1"/></joint>',
            "joint 'c': URDF lower=nan",
        ),
        (
            '<joint name="c" type="prismatic"><parent link="l2"/><child link="l3"/>'
            '<limit upper="inf" velocity="0.1" effort="1"/></joint>',
            "joint 'c': URDF upper=inf",
        ),
        (
            '<joint name="c" type="prismatic"><parent link="l2"/><child link="l3"/>'
            '<limit velocity="0.1" effort="1"/></joint>',
            "joint 'c': URDF range [0, 0] has zero width",
        ),
        (
            '<joint name="c" type="prismatic"><parent link="l2"/><child link="l3"/>'
            '<limit lower="0.0" upper="0.04" velocity="0" effort="1"/></joint>',
            "joint 'c': URDF velocity=0 (must be > 0)",
        ),
        (
            '<joint name="c" type="fixed"><parent link="l2"/><child link="l3"/></joint>',
            "joint 'c': is a fixed joint in the URDF: it cannot be commanded",
        ),
    ],
)
def test_unusable_urdf_limits_fail_naming_the_joint_and_why(joint_c: str, reason: str) -> None:
    """They used to fall back to the demonstrated range silently (for a 0-0.04 m gripper
    that allowed about three times its travel)."""
    urdf = parse_urdf(_robot(joint_c), "file robot.urdf")
    with pytest.raises(
        ValueError, match=r"joint limits from file robot\.urdf cannot be used"
    ) as err:
        resolve_limits(_settings(), AMIN, AMAX, urdf, "file robot.urdf")
    assert reason in str(err.value)
    assert "joint 'a'" not in str(err.value)  # only the broken joint is named


def test_a_parameter_for_the_broken_limit_lets_configure_go_on() -> None:
    no_limit = '<joint name="c" type="prismatic"><parent link="l2"/><child link="l3"/></joint>'
    urdf = parse_urdf(_robot(no_limit), "test")
    s = _settings(
        joint_lower_limits=(-3.0, -1.0, 0.0),
        joint_upper_limits=(3.0, 1.0, 0.04),
        max_joint_velocity=(0.1,),
    )
    limits, _ = resolve_limits(s, AMIN, AMAX, urdf)
    np.testing.assert_allclose(limits.lower, [-3.0, -1.0, 0.0])
    np.testing.assert_allclose(limits.upper, [3.0, 1.0, 0.04])
    # velocity only: the position range problem remains
    with pytest.raises(ValueError, match=r"no <limit>.*\(or set joint_lower_limits\)"):
        resolve_limits(_settings(max_joint_velocity=(0.1,)), AMIN, AMAX, urdf)


def test_nothing_widens_beyond_a_urdf_limit() -> None:
    s = _settings(joint_lower_limits=(-5.0, -1.0, -0.08), joint_upper_limits=(5.0, 1.0, 0.12))
    limits, sources = resolve_limits(s, AMIN, AMAX, parse_urdf(ROBOT, "test"))
    np.testing.assert_allclose(limits.lower, [-3.0, -1.0, 0.0])
    np.testing.assert_allclose(limits.upper, [3.0, 1.0, 0.04])
    assert len([w for w in sources.warnings if "the URDF's is used" in w]) == 4


def test_no_urdf_at_all_warns_per_joint_and_a_continuous_joint_is_named() -> None:
    _, sources = resolve_limits(_settings(), AMIN, AMAX)
    assert [w.split(":")[0] for w in sources.warnings] == ["joint 'a'", "joint 'b'", "joint 'c'"]
    assert (
        "no URDF given, position and velocity limits from the demonstrated range"
        in (sources.warnings[0])
    )
    _, sources = resolve_limits(_settings(), AMIN, AMAX, parse_urdf(ROBOT, "test"))
    assert len(sources.warnings) == 1 and "joint 'b' is continuous" in sources.warnings[0]


def test_ros2_control_and_transmission_tags_print_nothing(capfd: pytest.CaptureFixture) -> None:
    extra = (
        '<transmission name="t"><type>transmission_interface/SimpleTransmission</type>'
        '<joint name="a"><hardwareInterface>position</hardwareInterface></joint>'
        '<actuator name="m"/></transmission>'
        '<ros2_control name="rc" type="system"><hardware><plugin>x</plugin></hardware>'
        '<joint name="a"><command_interface name="position"/></joint></ros2_control>'
        "</robot>"
    )
    joints = parse_urdf(ROBOT.replace("</robot>", extra), "test")
    assert sorted(joints) == JOINTS
    out, err = capfd.readouterr()
    assert out == "" and err == ""
