"""Joint states merged by name from several publishers; a repeated name is refused."""

from __future__ import annotations

import numpy as np
import pytest

from diffusion_policy_node.joint_states import (
    DuplicateJointError,
    JointStateError,
    JointStateMerger,
    select_joints,
)

ARM = [f"j{i}" for i in range(1, 7)]
JOINTS = [*ARM, "finger"]


def test_select_by_name_in_any_order_ignoring_other_joints() -> None:
    cols, values = select_joints(
        ["c", "extra", "a"], [3.0, float("nan"), 1.0], ["a", "b", "c"], "w"
    )
    assert cols.tolist() == [2, 0] and values.tolist() == [3.0, 1.0]
    cols, values = select_joints(["x"], [1.0], ["a"], "w")
    assert cols.size == 0 and values.size == 0


def test_a_repeated_joint_name_is_refused_naming_it_never_last_wins() -> None:
    with pytest.raises(DuplicateJointError, match=r"\['j2'\] appear more than once") as err:
        select_joints(["j1", "j2", "j3", "j2"], [0.1, 0.5, 0.3, 0.0], ["j1", "j2", "j3"], "topic")
    assert err.value.joints == ("j2",) and err.value.kind == "duplicate"
    assert "topic" in str(err.value)
    # a repeated joint nobody wants still makes the message inconsistent
    with pytest.raises(DuplicateJointError, match="x"):
        select_joints(["j1", "x", "x"], [0.1, 0.0, 1.0], ["j1"], "topic")


def test_malformed_and_non_finite_are_refused() -> None:
    with pytest.raises(JointStateError, match="2 names but 1 positions"):
        select_joints(["a", "b"], [1.0], ["a", "b"], "w")
    with pytest.raises(JointStateError, match=r"non-finite position for joint\(s\) \['b'\]"):
        select_joints(["a", "b"], [1.0, float("inf")], ["a", "b"], "w")


def test_two_publishers_merge_into_the_newest_of_each_joint() -> None:
    m = JointStateMerger(JOINTS)
    m.offer(ARM, np.arange(6.0), 1.00)
    assert not m.complete and m.missing() == ["finger"] and m.oldest_stamp() == -np.inf
    m.offer(["finger"], [0.02], 1.005)
    assert m.complete
    np.testing.assert_allclose(m.positions(), [*range(6), 0.02])
    m.offer(ARM, np.arange(6.0) + 1, 1.01)  # arm at 100 Hz, gripper at 50 Hz
    np.testing.assert_allclose(m.positions(), [*range(1, 7), 0.02])
    np.testing.assert_allclose(m.stamps(), [1.01] * 6 + [1.005])
    assert m.oldest_stamp() == pytest.approx(1.005)  # the observation's age: its oldest joint


def test_each_joint_is_aged_on_its_own() -> None:
    m = JointStateMerger(JOINTS)
    m.offer(["finger"], [0.02], 1.0)
    for k in range(50):  # the gripper driver died; the arm keeps publishing
        m.offer(ARM, np.zeros(6), 1.0 + 0.01 * k)
    assert m.stale_joints(1.5, max_age=0.2) == {"finger": pytest.approx(0.5)}
    assert m.stale_joints(1.1, max_age=0.2) == {}


def test_an_older_stamp_does_not_overwrite_a_joint() -> None:
    m = JointStateMerger(["a", "b"])
    m.offer(["a", "b"], [1.0, 2.0], 2.0)
    res = m.offer(["a"], [9.0], 1.0)
    assert res.updated == () and res.out_of_order == ("a",)
    np.testing.assert_allclose(m.positions(), [1.0, 2.0])


def test_a_refused_message_merges_nothing() -> None:
    m = JointStateMerger(["a", "b"])
    m.offer(["a", "b"], [1.0, 2.0], 1.0)
    with pytest.raises(DuplicateJointError):
        m.offer(["a", "b", "b"], [5.0, 0.5, 0.0], 2.0)
    np.testing.assert_allclose(m.positions(), [1.0, 2.0])
    np.testing.assert_allclose(m.stamps(), [1.0, 1.0])
