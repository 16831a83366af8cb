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
from launch.substitutions import PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare

from diffusion_policy_node.ros.gazebo_launch import gazebo_policy_launch


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("diffusion_policy_node")
    return gazebo_policy_launch(
        entity="dp_arm",
        controllers=["arm_controller"],
        world=PathJoinSubstitution([share, "description", "worlds", "dp_reach.sdf"]),
        xacro_file=PathJoinSubstitution([share, "description", "urdf", "dp_arm.urdf.xacro"]),
        controllers_file=PathJoinSubstitution(
            [share, "description", "config", "dp_arm_controllers.yaml"]
        ),
        bridge_config=PathJoinSubstitution([share, "description", "config", "gz_bridge.yaml"]),
    )
