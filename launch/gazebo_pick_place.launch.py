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
from launch.substitutions import PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare

from diffusion_policy_node.ros.gazebo_launch import gazebo_policy_launch


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("diffusion_policy_node")
    return gazebo_policy_launch(
        entity="ur5e_gripper",
        controllers=["arm_controller", "gripper_controller"],
        world=PathJoinSubstitution([share, "description", "worlds", "ur5e_pick_place.sdf"]),
        xacro_file=PathJoinSubstitution(
            [share, "description", "urdf", "ur5e_gripper_gazebo.urdf.xacro"]
        ),
        controllers_file=PathJoinSubstitution(
            [share, "description", "config", "ur5e_gripper_controllers.yaml"]
        ),
        bridge_config=PathJoinSubstitution(
            [share, "description", "config", "ur5e_gripper_gz_bridge.yaml"]
        ),
    )
