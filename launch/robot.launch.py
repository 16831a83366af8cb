"""policy_node on a real robot (or any robot already publishing camera + joint states).

    ros2 launch diffusion_policy_node robot.launch.py checkpoint:=/path/to/checkpoint

The checkpoint runs as recorded: each action group (arm, gripper, ...) is commanded on the
topic and with the message type it was recorded with (e.g. the arm's JointTrajectory for
joint_trajectory_controller, the gripper's Float64MultiArray for a forward command controller).
Precedence of settings: an argument given on the command line > `params_file` (default: the
package's config/policy_node.yaml) > the checkpoint. An argument that is not given changes
nothing (`device`, `output_mode`, `use_sim_time`, `autostart` have no default of their own).
A bad argument (`use_sim_time:=maybe`, a missing `params_file`) stops the launch with one line;
so does policy_node exiting with an error (exit code 1).

policy_node is a lifecycle node. `autostart` true (the node's default): it configures and
activates itself. `autostart:=false`: this launch drives the managed bring-up instead, emitting
configure once the node is up and activate once when configure succeeds (configuring ->
inactive); a configure that fails ends the launch (exit code 1). Afterwards the lifecycle is the
operator's: `ros2 lifecycle set /policy_node deactivate` (or `~/stop`) stays inactive, `cleanup`
unloads the checkpoint. Ctrl-C ends the launch with exit code 0.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import PathJoinSubstitution
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

from diffusion_policy_node.ros.launch_util import (
    boolean,
    checked_arguments,
    existing_file,
    existing_folder,
    lifecycle_bringup,
    optional,
    package_node,
    robot_parameters,
)


def _policy_node(context) -> list:
    """policy_node with `params_file`, then the checkpoint and the arguments given; the
    managed bring-up when its effective `autostart` is false."""
    values = context.launch_configurations
    overrides, autostart = robot_parameters(values)
    # strings as given (device:=0 is the node's error, not an integer)
    typed = {
        name: ParameterValue(value, value_type=str) if isinstance(value, str) else value
        for name, value in overrides.items()
    }
    node = package_node("policy_node", lifecycle=True, parameters=[values["params_file"], typed])
    return [node] if autostart else [node, *lifecycle_bringup(node)]


def generate_launch_description() -> LaunchDescription:
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
                default_value="",
                description="true: use /clock (in simulation). Not given: params_file's, else "
                "false.",
            ),
            DeclareLaunchArgument(
                "device",
                default_value="",
                description="Inference device: auto|cuda|cuda:N|cpu. Not given: params_file's, "
                "else auto.",
            ),
            DeclareLaunchArgument(
                "output_mode",
                default_value="",
                description="chunk (JointTrajectory) or stream (Float64MultiArray) for every "
                "action group; not given: each group as recorded in the checkpoint.",
            ),
            DeclareLaunchArgument(
                "autostart",
                default_value="",
                description="true: policy_node configures and activates itself; false: this "
                "launch drives the managed bring-up. Not given: params_file's, else true.",
            ),
            checked_arguments(
                {
                    "checkpoint": existing_folder,
                    "params_file": existing_file,
                    "use_sim_time": optional(boolean),
                    "autostart": optional(boolean),
                }
            ),
            OpaqueFunction(function=_policy_node),
        ]
    )
