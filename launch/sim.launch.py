"""A bundled MuJoCo robot (sim_node) driven by policy_node, both on simulation time.

    ros2 launch diffusion_policy_node sim.launch.py                   # reach, its checkpoint
    ros2 launch diffusion_policy_node sim.launch.py task:=pick_place  # UR5e + gripper, its own
    ros2 launch diffusion_policy_node sim.launch.py checkpoint:=/path/to/checkpoint

`task` picks the sim and, unless given, its checkpoint and sim_node parameters: reach (the
3-joint arm; models/sim_arm_diffusion, config/sim_node.yaml) or pick_place (UR5e + gripper;
models/ur5e_pick_place, config/robots/ur5e_gripper/sim_node.yaml: /arm_controller/joint_trajectory
and /gripper_controller/commands in, /joint_states with seven joints, /scene_camera/image_raw,
/wrist_camera/image_raw and a latched /robot_description out). policy_node takes the topics and
joints the checkpoint was recorded with.

The sim stays paused until policy_node is active (its start-up takes seconds: loading, warm-up),
so the first episode starts with the policy; `ros2 service call /sim_node/unpause
std_srvs/srv/Trigger` starts it earlier. A new episode: `ros2 service call /sim_node/reset
std_srvs/srv/Trigger`; the outcome: `/sim_node/report` (JSON; `time` stops when the episode
ends). Needs no Gazebo and no GPU (MuJoCo renders with EGL/OSMesa). A bad argument (`seed:=abc`,
`real_time_factor:=fast`, a missing params file) stops the launch with one line; either node
exiting with an error stops the other and the launch (exit code 1); Ctrl-C exits 0.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

from diffusion_policy_node.ros.launch_util import (
    checked_arguments,
    existing_file,
    existing_folder,
    given_arguments,
    integer,
    number,
    optional,
    package_node,
    sim_task_files,
)


def _nodes(context) -> list:
    """sim_node and policy_node with the task's files (or the ones given)."""
    values = context.launch_configurations
    files = sim_task_files(values, FindPackageShare("diffusion_policy_node").perform(context))
    existing_folder("checkpoint", files["checkpoint"])
    existing_file("sim_params_file", files["sim_params_file"])
    return [
        package_node(
            "sim_node",
            parameters=[
                files["sim_params_file"],
                {
                    "task": ParameterValue(LaunchConfiguration("task"), value_type=str),
                    "real_time_factor": LaunchConfiguration("real_time_factor"),
                    "seed": LaunchConfiguration("seed"),
                    "start_when_active": "/policy_node",
                },
            ],
        ),
        package_node(
            "policy_node",
            parameters=[
                LaunchConfiguration("params_file"),
                {
                    "checkpoint": ParameterValue(files["checkpoint"], value_type=str),
                    "use_sim_time": True,
                },
                # reach's sim publishes no URDF: its limits are the demonstrated range (the
                # node would otherwise wait for /robot_description and fail)
                {"robot_description_topic": ""} if values.get("task", "reach") == "reach" else {},
                # only when given: params_file's device otherwise (command line > params_file)
                {
                    name: ParameterValue(value, value_type=str)
                    for name, value in given_arguments(values, ["device"]).items()
                },
            ],
        ),
    ]


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("diffusion_policy_node")
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "task",
                default_value="reach",
                choices=["reach", "pick_place"],
                description="Sim task: reach (3-joint arm) | pick_place (UR5e + gripper).",
            ),
            DeclareLaunchArgument(
                "checkpoint",
                default_value="",
                description="Checkpoint folder trained on the sim's topics (not given: the "
                "task's bundled one, models/sim_arm_diffusion or models/ur5e_pick_place).",
            ),
            DeclareLaunchArgument(
                "params_file",
                default_value=PathJoinSubstitution([share, "config", "policy_node.yaml"]),
                description="policy_node parameters YAML.",
            ),
            DeclareLaunchArgument(
                "sim_params_file",
                default_value="",
                description="sim_node parameters YAML (not given: the task's, "
                "config/sim_node.yaml or config/robots/ur5e_gripper/sim_node.yaml).",
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
                "device",
                default_value="",
                description="Inference device: auto|cuda|cuda:N|cpu (not given: params_file's, "
                "else auto).",
            ),
            checked_arguments(
                {
                    "checkpoint": optional(existing_folder),
                    "params_file": existing_file,
                    "sim_params_file": optional(existing_file),
                    "real_time_factor": number(low=0.0),
                    "seed": integer(0, 2**31 - 1),
                }
            ),
            OpaqueFunction(function=_nodes),
        ]
    )
