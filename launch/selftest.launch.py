"""DDS self-test: a talker and a listener process exchange verified Image + JointState messages.

    ros2 launch diffusion_policy_node selftest.launch.py count:=100

The listener exits 0 after verifying `count` messages of each type (see ros_selftest --help),
which ends the launch with exit code 0; a failed check (or either process failing) ends it
with exit code 1.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration

from diffusion_policy_node.ros.launch_util import checked_arguments, integer, package_node


def generate_launch_description() -> LaunchDescription:
    count = LaunchConfiguration("count")
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "count", default_value="30", description="messages of each type to verify"
            ),
            checked_arguments({"count": integer(low=1)}),
            package_node(
                "ros_selftest", name="dp_selftest_listener", arguments=["listen", "--count", count]
            ),
            # The talker is done once it has sent `count`: only a failure ends the launch.
            package_node(
                "ros_selftest",
                name="dp_selftest_talker",
                arguments=["talk", "--count", count],
                shutdown_on_success=False,
            ),
        ]
    )
