"""A bundled MuJoCo robot (sim_node) driven by policy_node, both on simulation time.

    ros2 launch diffusion_policy_node sim.launch.py            # the bundled checkpoint
    ros2 launch diffusion_policy_node sim.launch.py checkpoint:=/path/to/checkpoint
    ros2 launch diffusion_policy_node sim.launch.py task:=pick_place \
        sim_params_file:=<share>/config/robots/ur5e_gripper/sim_node.yaml \
        checkpoint:=/path/to/pick_place_checkpoint params_file:=/path/to/policy_node.yaml

`task` picks the sim: reach (the 3-joint arm, the bundled checkpoint's task) or pick_place
(UR5e + gripper: /arm_controller/joint_trajectory and /gripper_controller/commands in,
/joint_states with seven joints, /scene_camera/image_raw, /wrist_camera/image_raw and a latched
/robot_description out; its policy_node parameters must name those topics and joints).

sim_node publishes /joint_states, /camera/image_raw and /clock and follows
/arm_controller/joint_trajectory like joint_trajectory_controller; start a new episode with
`ros2 service call /sim_node/reset std_srvs/srv/Trigger` and read the outcome from
`/sim_node/report` (JSON). Needs no Gazebo and no GPU (MuJoCo renders with EGL/OSMesa).
A bad argument (`seed:=abc`, `real_time_factor:=fast`, a missing params file) stops the launch
with one line; either node exiting with an error stops the other and the launch (exit code 1).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

from diffusion_policy_node.ros.launch_util import (
    checked_arguments,
    existing_file,
    existing_folder,
    integer,
    number,
    package_node,
)


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("diffusion_policy_node")
    checkpoint = LaunchConfiguration("checkpoint")
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "checkpoint",
                default_value=PathJoinSubstitution([share, "models", "sim_arm_diffusion"]),
                description="Checkpoint folder trained on the sim's topics (default: the "
                "bundled models/sim_arm_diffusion).",
            ),
            DeclareLaunchArgument(
                "params_file",
                default_value=PathJoinSubstitution([share, "config", "policy_node.yaml"]),
                description="policy_node parameters YAML.",
            ),
            DeclareLaunchArgument(
                "sim_params_file",
                default_value=PathJoinSubstitution([share, "config", "sim_node.yaml"]),
                description="sim_node parameters YAML.",
            ),
            DeclareLaunchArgument(
                "task",
                default_value="reach",
                choices=["reach", "pick_place"],
                description="Sim task: reach (3-joint arm) | pick_place (UR5e + gripper).",
            ),
            DeclareLaunchArgument(
                "real_time_factor",
                default_value="1.0",
                description="Simulation speed over wall time (policy inference must keep up).",
            ),
            DeclareLaunchArgument(
                "seed", default_value="0", description="Layout seed of the first episode."
            ),
            DeclareLaunchArgument(
                "device", default_value="auto", description="Inference device: auto|cuda|cpu."
            ),
            checked_arguments(
                {
                    "checkpoint": existing_folder,
                    "params_file": existing_file,
                    "sim_params_file": existing_file,
                    "real_time_factor": number(low=0.0),
                    "seed": integer(0, 2**31 - 1),
                }
            ),
            package_node(
                "sim_node",
                parameters=[
                    LaunchConfiguration("sim_params_file"),
                    {
                        "task": ParameterValue(LaunchConfiguration("task"), value_type=str),
                        "real_time_factor": LaunchConfiguration("real_time_factor"),
                        "seed": LaunchConfiguration("seed"),
                    },
                ],
            ),
            package_node(
                "policy_node",
                parameters=[
                    LaunchConfiguration("params_file"),
                    {
                        "checkpoint": ParameterValue(checkpoint, value_type=str),
                        "use_sim_time": True,
                        "device": ParameterValue(LaunchConfiguration("device"), value_type=str),
                    },
                ],
            ),
        ]
    )
