"""policy_node on a real robot (or any robot already publishing camera + joint states).

    ros2 launch diffusion_policy_node robot.launch.py checkpoint:=/path/to/checkpoint

The arm's driver must accept the commands: `output_mode:=chunk` (default) publishes
trajectory_msgs/JointTrajectory on /arm_controller/joint_trajectory (joint_trajectory_controller),
`output_mode:=stream` std_msgs/Float64MultiArray on /forward_position_controller/commands.
Every other setting comes from `params_file` (default: the package's config/policy_node.yaml).
A bad argument (`use_sim_time:=maybe`, a missing `params_file`) stops the launch with one line;
so does policy_node exiting with an error (exit code 1).

policy_node is a lifecycle node. `autostart:=true` (default): it configures and activates
itself. `autostart:=false`: the launch drives the managed bring-up instead, emitting configure
once the node is up and activate once it is inactive (launch_ros ChangeState events); other
tools (`ros2 lifecycle set /policy_node deactivate`, a supervisor) can take over from there.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import UnlessCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

from diffusion_policy_node.ros.launch_util import (
    boolean,
    checked_arguments,
    existing_file,
    existing_folder,
    lifecycle_bringup,
    package_node,
)


def generate_launch_description() -> LaunchDescription:
    checkpoint = LaunchConfiguration("checkpoint")
    params_file = LaunchConfiguration("params_file")
    use_sim_time = LaunchConfiguration("use_sim_time")
    device = LaunchConfiguration("device")
    output_mode = LaunchConfiguration("output_mode")
    autostart = LaunchConfiguration("autostart")
    node = package_node(
        "policy_node",
        lifecycle=True,
        parameters=[
            params_file,
            {
                "checkpoint": ParameterValue(checkpoint, value_type=str),
                "use_sim_time": use_sim_time,
                "autostart": autostart,
                # strings as given (device:=0 is the node's error, not an integer)
                "device": ParameterValue(device, value_type=str),
                "output_mode": ParameterValue(output_mode, value_type=str),
            },
        ],
    )
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "checkpoint",
                description="Checkpoint folder (config.yaml + safetensors weights).",
            ),
            DeclareLaunchArgument(
                "params_file",
                default_value=PathJoinSubstitution(
                    [FindPackageShare("diffusion_policy_node"), "config", "policy_node.yaml"]
                ),
                description="policy_node parameters YAML (policy_node: ros__parameters: ...).",
            ),
            DeclareLaunchArgument(
                "use_sim_time",
                default_value="false",
                description="Use /clock (true in simulation).",
            ),
            DeclareLaunchArgument(
                "device", default_value="auto", description="Inference device: auto|cuda|cpu."
            ),
            DeclareLaunchArgument(
                "output_mode",
                default_value="chunk",
                description="chunk (JointTrajectory) or stream (Float64MultiArray).",
            ),
            DeclareLaunchArgument(
                "autostart",
                default_value="true",
                description="true: policy_node configures and activates itself; false: this "
                "launch emits the configure and activate transitions (managed bring-up).",
            ),
            checked_arguments(
                {
                    "checkpoint": existing_folder,
                    "params_file": existing_file,
                    "use_sim_time": boolean,
                    "autostart": boolean,
                }
            ),
            node,
            *lifecycle_bringup(node, condition=UnlessCondition(autostart)),
        ]
    )
