"""DDS self-test: a talker and a listener process exchange verified Image + JointState messages.

    ros2 launch diffusion_policy_node selftest.launch.py count:=100

The listener exits 0 after verifying `count` messages of each type (see ros_selftest --help).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description() -> LaunchDescription:
    count = LaunchConfiguration("count")
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "count", default_value="30", description="messages of each type to verify"
            ),
            Node(
                package="diffusion_policy_node",
                executable="ros_selftest",
                name="dp_selftest_listener",
                arguments=["listen", "--count", count],
                output="screen",
            ),
            Node(
                package="diffusion_policy_node",
                executable="ros_selftest",
                name="dp_selftest_talker",
                arguments=["talk", "--count", count],
                output="screen",
            ),
        ]
    )
