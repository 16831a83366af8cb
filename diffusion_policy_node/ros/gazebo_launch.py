"""The Gazebo bring-up both gazebo*.launch.py files share.

`gazebo_policy_launch(...)` is a whole launch description: the arguments (`checkpoint`,
`world`, `params_file`, `device`), checked before anything starts, a robot in gz sim with
ros2_control (`gazebo_robot`: gz sim, robot_state_publisher, the spawn, the bridge, then the
controller spawners once the robot exists) and policy_node on simulation time. Each launch file
names its robot's files and controllers.

`launch`/`launch_ros` (a full ROS 2 install) are imported only inside the functions, as in
`launch_util`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .launch_util import (
    checked_arguments,
    existing_file,
    existing_folder,
    exit_policy,
    package_node,
)

__all__ = ["gazebo_policy_launch", "gazebo_robot", "xacro_description"]


def gazebo_policy_launch(
    *,
    entity: str,
    controllers: Sequence[str],
    world: Any,
    xacro_file: Any,
    controllers_file: Any,
    bridge_config: Any,
) -> Any:
    """The LaunchDescription of a gazebo*.launch.py file: the robot `xacro_file` (expanded with
    `controllers_file`) spawned as `entity` in `world` (the `world` argument's default), its
    `controllers` spawned after joint_state_broadcaster, `bridge_config` bridged, and
    policy_node on simulation time with `params_file`, `checkpoint` and `device`."""
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument
    from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
    from launch_ros.parameter_descriptions import ParameterValue
    from launch_ros.substitutions import FindPackageShare

    share = FindPackageShare("diffusion_policy_node")
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "checkpoint", description="Checkpoint folder trained on this robot's topics."
            ),
            DeclareLaunchArgument("world", default_value=world, description="SDF world to load."),
            DeclareLaunchArgument(
                "params_file",
                default_value=PathJoinSubstitution([share, "config", "policy_node.yaml"]),
                description="policy_node parameters YAML (naming this robot's topics and joints).",
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
                robot_description=xacro_description(xacro_file, controllers_file),
                bridge_config=bridge_config,
                entity=entity,
                controllers_file=controllers_file,
                controllers=controllers,
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


def xacro_description(xacro_file: Any, controllers_file: Any) -> Any:
    """The robot_description parameter: `xacro <xacro_file> controllers_file:=<controllers>`,
    passed as a string."""
    from launch.substitutions import Command, FindExecutable, PathJoinSubstitution
    from launch_ros.parameter_descriptions import ParameterValue

    return ParameterValue(
        Command(
            [
                PathJoinSubstitution([FindExecutable(name="xacro")]),
                " ",
                xacro_file,
                " controllers_file:=",
                controllers_file,
            ]
        ),
        value_type=str,
    )


def gazebo_robot(
    *,
    world: Any,
    robot_description: Any,
    bridge_config: Any,
    entity: str,
    controllers_file: Any,
    controllers: Sequence[str],
) -> list[Any]:
    """Launch actions of a robot in gz sim with ros2_control, in this order: gz sim running
    `world`, robot_state_publisher (`robot_description`, simulation time), `ros_gz_sim create`
    spawning it as `entity`, ros_gz_bridge with `bridge_config`; once the spawn is done the
    joint_state_broadcaster spawner, once that is done a spawner of each of `controllers`
    (configured by `controllers_file`). Every process has the `exit_policy`."""
    from launch.actions import IncludeLaunchDescription, RegisterEventHandler
    from launch.event_handlers import OnProcessExit
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    from launch.substitutions import PathJoinSubstitution
    from launch_ros.actions import Node
    from launch_ros.substitutions import FindPackageShare

    gz_sim = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(
            PathJoinSubstitution([FindPackageShare("ros_gz_sim"), "launch", "gz_sim.launch.py"])
        ),
        launch_arguments={"gz_args": [" -r -v 1 ", world]}.items(),
    )
    spawn = Node(
        package="ros_gz_sim",
        executable="create",
        output="screen",
        arguments=["-topic", "robot_description", "-name", entity, "-allow_renaming", "true"],
        on_exit=exit_policy("ros_gz_sim create", shutdown_on_success=False),
    )
    joint_state_broadcaster = _spawner("joint_state_broadcaster")
    spawners = [_spawner(name, "--param-file", controllers_file) for name in controllers]
    return [
        gz_sim,
        Node(
            package="robot_state_publisher",
            executable="robot_state_publisher",
            output="screen",
            parameters=[{"robot_description": robot_description, "use_sim_time": True}],
            on_exit=exit_policy("robot_state_publisher"),
        ),
        spawn,
        Node(
            package="ros_gz_bridge",
            executable="parameter_bridge",
            output="screen",
            parameters=[{"config_file": bridge_config, "use_sim_time": True}],
            on_exit=exit_policy("ros_gz_bridge"),
        ),
        # Controllers start once the robot (and with it gz_ros2_control) exists.
        RegisterEventHandler(
            OnProcessExit(target_action=spawn, on_exit=[joint_state_broadcaster])
        ),
        RegisterEventHandler(
            OnProcessExit(target_action=joint_state_broadcaster, on_exit=spawners)
        ),
    ]


def _spawner(controller: str, *arguments: Any) -> Any:
    """controller_manager's spawner loading `controller`; it exits 0 once done (the launch goes
    on), non-zero when it cannot load it (the launch fails)."""
    from launch_ros.actions import Node

    return Node(
        package="controller_manager",
        executable="spawner",
        arguments=[controller, *arguments],
        on_exit=exit_policy(f"{controller} spawner", shutdown_on_success=False),
    )
