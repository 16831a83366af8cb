"""The arm in Gazebo (gz sim, ROS 2 Jazzy) with ros2_control, driven by policy_node.
(The reach task's 3-joint arm; the UR5e + gripper pick-and-place robot, with a gripper
controller and two cameras, has its own launch file: gazebo_pick_place.launch.py.)

    ros2 launch diffusion_policy_node gazebo.launch.py checkpoint:=/path/to/checkpoint

Starts gz sim with description/worlds/dp_reach.sdf, robot_state_publisher with the xacro
description, spawns the arm (ros_gz_sim create), starts joint_state_broadcaster and
arm_controller (joint_trajectory_controller) once the arm exists, bridges /clock and the camera
(ros_gz_bridge, description/config/gz_bridge.yaml) and runs policy_node on simulation time.
Needs ros-jazzy-ros-gz, ros-jazzy-gz-ros2-control, ros-jazzy-ros2-controllers and xacro.
A bad argument (a missing `world` or `params_file`) stops the launch with one line; so does any
of these processes failing (a spawner that cannot load its controller, policy_node exiting with
an error): the launch shuts down and exits 1.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

from diffusion_policy_node.ros.launch_util import (
    checked_arguments,
    existing_file,
    existing_folder,
    exit_policy,
    gazebo_robot,
    package_node,
    xacro_description,
)


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("diffusion_policy_node")
    controllers = PathJoinSubstitution([share, "description", "config", "dp_arm_controllers.yaml"])
    bridge_config = PathJoinSubstitution([share, "description", "config", "gz_bridge.yaml"])
    robot_description = xacro_description(
        PathJoinSubstitution([share, "description", "urdf", "dp_arm.urdf.xacro"]), controllers
    )
    joint_state_broadcaster = Node(
        package="controller_manager",
        executable="spawner",
        arguments=["joint_state_broadcaster"],
        on_exit=exit_policy("joint_state_broadcaster spawner", shutdown_on_success=False),
    )
    arm_controller = Node(
        package="controller_manager",
        executable="spawner",
        arguments=["arm_controller", "--param-file", controllers],
        on_exit=exit_policy("arm_controller spawner", shutdown_on_success=False),
    )
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "checkpoint", description="Checkpoint folder trained on this arm's topics."
            ),
            DeclareLaunchArgument(
                "world",
                default_value=PathJoinSubstitution(
                    [share, "description", "worlds", "dp_reach.sdf"]
                ),
                description="SDF world to load.",
            ),
            DeclareLaunchArgument(
                "params_file",
                default_value=PathJoinSubstitution([share, "config", "policy_node.yaml"]),
                description="policy_node parameters YAML.",
            ),
            DeclareLaunchArgument(
                "device", default_value="auto", description="Inference device: auto|cuda|cpu."
            ),
            checked_arguments(
                {
                    "checkpoint": existing_folder,
                    "world": existing_file,
                    "params_file": existing_file,
                }
            ),
            *gazebo_robot(
                world=LaunchConfiguration("world"),
                robot_description=robot_description,
                bridge_config=bridge_config,
                entity="dp_arm",
                joint_state_broadcaster=joint_state_broadcaster,
                controllers=[arm_controller],
            ),
            package_node(
                "policy_node",
                parameters=[
                    LaunchConfiguration("params_file"),
                    {
                        "checkpoint": ParameterValue(
                            LaunchConfiguration("checkpoint"), value_type=str
                        ),
                        "use_sim_time": True,
                        "device": ParameterValue(LaunchConfiguration("device"), value_type=str),
                    },
                ],
            ),
        ]
    )
