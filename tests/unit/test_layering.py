"""docs/design.md#layers: only diffusion_policy_node/ros/ imports rclpy or ROS message packages."""

import ast
from pathlib import Path

import diffusion_policy_node

PACKAGE_DIR = Path(diffusion_policy_node.__file__).parent
ROS_MODULES = ("rclpy", "rosidl_runtime_py", "launch", "launch_ros", "ament_index_python")


def is_ros_module(name: str) -> bool:
    top = name.split(".")[0]
    return top in ROS_MODULES or top.endswith(("_msgs", "_srvs", "_interfaces"))


def ros_imports(path: Path) -> list[str]:
    """'file:line module' for every ROS import in `path`, at any nesting level."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [f"{path}:{node.lineno} {n}" for n in names if is_ros_module(n)]
    return found


def test_only_ros_layer_imports_ros() -> None:
    files = sorted(PACKAGE_DIR.rglob("*.py"))
    assert len(files) > 7, "package sources not found"
    leaks = [
        hit
        for f in files
        if "ros" not in f.relative_to(PACKAGE_DIR).parts[:1]
        for hit in ros_imports(f)
    ]
    assert leaks == [], "ROS imports outside diffusion_policy_node/ros/:\n" + "\n".join(leaks)


def test_detector_sees_nested_and_from_imports(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text(
        "import numpy\n"
        "def f():\n    from sensor_msgs.msg import Image\n"
        "import rclpy.node as rn\nfrom std_srvs.srv import Trigger\n"
    )
    hits = ros_imports(src)
    assert sorted(h.split(" ")[1] for h in hits) == [
        "rclpy.node",
        "sensor_msgs.msg",
        "std_srvs.srv",
    ]


def test_ros_layer_does_import_ros() -> None:
    # Sanity check of the scan itself: the ROS layer is expected to show up.
    assert ros_imports(PACKAGE_DIR / "ros" / "selftest.py")
