"""The UR5e + gripper pick-and-place scene in Gazebo (gz sim, ROS 2 Jazzy) with ros2_control,
driven by policy_node: the Gazebo counterpart of `sim_node task:=pick_place`.

    ros2 launch diffusion_policy_node gazebo_pick_place.launch.py checkpoint:=/path/to/ckpt \\
        params_file:=/path/to/policy_node.yaml

Starts gz sim with description/worlds/ur5e_pick_place.sdf, robot_state_publisher with
description/urdf/ur5e_gripper_gazebo.urdf.xacro (the generated ur5e_gripper.urdf + cameras +
ros2_control), spawns the robot (ros_gz_sim create), starts joint_state_broadcaster, then
arm_controller (joint_trajectory_controller, the six UR joints) and gripper_controller
(forward_command_controller, gripper_finger_joint) once the robot exists, bridges /clock and
both cameras (ros_gz_bridge, description/config/ur5e_gripper_gz_bridge.yaml) and runs
policy_node on simulation time. Same topics as sim_node task:=pick_place:
/arm_controller/joint_trajectory, /gripper_controller/commands, /joint_states,
/scene_camera/image_raw, /wrist_camera/image_raw, /clock, /robot_description.
Needs ros-jazzy-ros-gz, ros-jazzy-gz-ros2-control, ros-jazzy-ros2-controllers and xacro; not
launched on the development machine (no Gazebo there), checked statically by
tests/unit/test_pick_place.py. A bad argument or any process failing stops the launch (exit 1).
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
    controllers = PathJoinSubstitution(
        [share, "description", "config", "ur5e_gripper_controllers.yaml"]
    )
    bridge_config = PathJoinSubstitution(
        [share, "description", "config", "ur5e_gripper_gz_bridge.yaml"]
    )
    robot_description = xacro_description(
        PathJoinSubstitution([share, "description", "urdf", "ur5e_gripper_gazebo.urdf.xacro"]),
        controllers,
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
    gripper_controller = Node(
        package="controller_manager",
        executable="spawner",
        arguments=["gripper_controller", "--param-file", controllers],
        on_exit=exit_policy("gripper_controller spawner", shutdown_on_success=False),
    )
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "checkpoint", description="Checkpoint folder trained on this robot's topics."
            ),
            DeclareLaunchArgument(
                "world",
                default_value=PathJoinSubstitution(
                    [share, "description", "worlds", "ur5e_pick_place.sdf"]
                ),
                description="SDF world to load.",
            ),
            DeclareLaunchArgument(
                "params_file",
                default_value=PathJoinSubstitution([share, "config", "policy_node.yaml"]),
                description="policy_node parameters YAML (name the pick_place topics/joints).",
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
                entity="ur5e_gripper",
                joint_state_broadcaster=joint_state_broadcaster,
                controllers=[arm_controller, gripper_controller],
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
