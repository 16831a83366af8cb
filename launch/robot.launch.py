"""policy_node on a real robot (or any robot already publishing camera + joint states).

    ros2 launch diffusion_policy_node robot.launch.py checkpoint:=/path/to/checkpoint

The arm's driver must accept the commands: `output_mode:=chunk` (default) publishes
trajectory_msgs/JointTrajectory on /arm_controller/joint_trajectory (joint_trajectory_controller),
`output_mode:=stream` std_msgs/Float64MultiArray on /forward_position_controller/commands.
Every other setting comes from `params_file` (default: the package's config/policy_node.yaml).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    checkpoint = LaunchConfiguration("checkpoint")
    params_file = LaunchConfiguration("params_file")
    use_sim_time = LaunchConfiguration("use_sim_time")
    device = LaunchConfiguration("device")
    output_mode = LaunchConfiguration("output_mode")
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
            Node(
                package="diffusion_policy_node",
                executable="policy_node",
                name="policy_node",
                output="screen",
                parameters=[
                    params_file,
                    {
                        "checkpoint": checkpoint,
                        "use_sim_time": use_sim_time,
                        "device": device,
                        "output_mode": output_mode,
                    },
                ],
            ),
        ]
    )
