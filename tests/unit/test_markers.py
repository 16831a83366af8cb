"""Markers say what a test needs: every module in tests/ros/ is marked `ros` (real rclpy, DDS),
and no module in tests/unit/ is, nor imports rclpy or a message package at its top level
(unit = ROS-free).
`-m "not ros"` then runs exactly the tests that need no ROS."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.unit.test_layering import is_ros_module

TESTS = Path(__file__).resolve().parents[1]


def module_markers(tree: ast.Module) -> set[str]:
    """Marker names in the module's `pytestmark` (one mark or a list of them)."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets
        ):
            values = node.value.elts if isinstance(node.value, ast.List) else [node.value]
            return {v.attr for v in values if isinstance(v, ast.Attribute)}
    return set()


def imports_ros(tree: ast.Module) -> bool:
    """Whether the module imports rclpy or a message package at its top level (an import inside
    a test that skips without it is the test's own business)."""
    for node in tree.body:
        if isinstance(node, ast.Import) and any(is_ros_module(a.name) for a in node.names):
            return True
        module = node.module if isinstance(node, ast.ImportFrom) and node.level == 0 else None
        if module and is_ros_module(module):
            return True
    return False


def _modules(folder: str) -> list[Path]:
    return sorted((TESTS / folder).glob("test_*.py"))


@pytest.mark.parametrize("path", _modules("ros"), ids=lambda p: p.name)
def test_ros_tests_are_marked_ros(path: Path) -> None:
    assert "ros" in module_markers(ast.parse(path.read_text())), f"{path}: pytestmark lacks ros"


@pytest.mark.parametrize("path", _modules("unit"), ids=lambda p: p.name)
def test_unit_tests_need_no_ros(path: Path) -> None:
    tree = ast.parse(path.read_text())
    assert "ros" not in module_markers(tree), f"{path} is marked ros: move it to tests/ros/"
    assert not imports_ros(tree), f"{path} imports ROS: mark it ros and move it to tests/ros/"


def test_the_marker_scan_reads_both_forms() -> None:
    one = ast.parse("import pytest\npytestmark = pytest.mark.ros\n")
    two = ast.parse("import pytest\npytestmark = [pytest.mark.ros, pytest.mark.slow]\n")
    assert module_markers(one) == {"ros"} and module_markers(two) == {"ros", "slow"}
    assert module_markers(ast.parse("x = 1\n")) == set()
    assert imports_ros(ast.parse("import numpy\nfrom sensor_msgs.msg import Image\n"))
    assert not imports_ros(ast.parse("def f():\n    import rclpy\n"))
