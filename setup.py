"""ament_python package setup for diffusion_policy_node.

`colcon build` installs the console scripts to `lib/diffusion_policy_node/` (see setup.cfg) so
`ros2 run diffusion_policy_node <executable>` finds them; `pip install -e .` puts them on PATH.
"""

import os
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "diffusion_policy_node"


def share_tree(folder: str) -> list[tuple[str, list[str]]]:
    """data_files entries that install `folder` (recursively) under share/<package>/."""
    entries: dict[str, list[str]] = {}
    for path in sorted(glob(os.path.join(folder, "**", "*"), recursive=True)):
        if os.path.isfile(path) and "__pycache__" not in path:
            dest = os.path.join("share", PACKAGE, os.path.dirname(path))
            entries.setdefault(dest, []).append(path)
    return sorted(entries.items())


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, PACKAGE + ".*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
        ("share/" + PACKAGE, ["package.xml"]),
        *share_tree("launch"),
        *share_tree("config"),
        *share_tree("models"),
        *share_tree("description"),
    ],
    python_requires=">=3.10",
    install_requires=[
        "numpy>=1.24",
        "pyyaml>=6.0",
        "opencv-python-headless>=4.8",
        "safetensors>=0.4",
        "rosbags>=0.10",
        "torch>=2.1",
        "urdfdom-py>=1.2",
    ],
    extras_require={
        # LeRobotDataset folders (dp-export lerobot, dp-train --data on one): parquet.
        "lerobot": ["pyarrow>=14"],
    },
    zip_safe=True,
    maintainer="diffusion_policy_node developers",
    maintainer_email="dev@diffusion-policy-node.invalid",
    description="Visuomotor Diffusion Policy for ROS 2 arms (DDPM training, DDIM inference).",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "ros_selftest = diffusion_policy_node.ros.entry:ros_selftest",
            "dp-info = diffusion_policy_node.runtime.info:main",
            "dp-train = diffusion_policy_node.train.cli:main",
            "dp-replay = diffusion_policy_node.train.replay:main",
            "policy_node = diffusion_policy_node.ros.entry:policy_node",
            "jtc_consumer = diffusion_policy_node.ros.testing.jtc_consumer:main",
            "fake_sensors = diffusion_policy_node.ros.testing.fake_sensors:main",
            "sim_node = diffusion_policy_node.ros.entry:sim_node",
            "recorder_node = diffusion_policy_node.ros.entry:recorder_node",
            "dp-collect = diffusion_policy_node.eval.collect:main",
            "dp-eval = diffusion_policy_node.eval.evaluate:main",
            "dp-play = diffusion_policy_node.ros.play_node:main",
            "dp-config = diffusion_policy_node.train.robot_config:main",
            "dp-node = diffusion_policy_node.ros.node_cli:main",
            "dp-import = diffusion_policy_node.interop.lerobot_cli:import_main",
            "dp-export = diffusion_policy_node.interop.lerobot_cli:export_main",
        ],
    },
)
