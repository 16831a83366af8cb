"""Record demonstrations with `ros2 bag record`, or with the package's recorder_node when
rosbag2 is not installed (PyPI wheels only).

    ros2 launch diffusion_policy_node record.launch.py output:=demos/episode_0000

`topics` is a space-separated list (default: the topics config/robots/sim_arm/data.yaml trains on).
Without rosbag2 the launch says so in one line and runs recorder_node instead, recording at once
into `<output>_0000` (recorder_node numbers its bags); for one bag per episode, started and
stopped with ~/start and ~/stop, run recorder_node itself (see config/recorder_node.yaml).
`use_sim_time` is true or false in any case (`True` works); another value, or the recorder
failing, ends the launch with one line and exit code 1. Ctrl-C closes the bag and exits 0.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, LogInfo, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PythonExpression

from diffusion_policy_node.ros.launch_util import (
    boolean,
    checked_arguments,
    exit_policy,
    package_node,
    recorder_fallback,
    rosbag2_available,
)

DEFAULT_TOPICS = "/camera/image_raw /joint_states /arm_controller/joint_trajectory"


def _recorder(context) -> list:
    """`ros2 bag record` where rosbag2 exists, else recorder_node (and one line saying so)."""
    if rosbag2_available():
        use_sim_time = LaunchConfiguration("use_sim_time")
        return [
            ExecuteProcess(
                cmd=[
                    "ros2",
                    "bag",
                    "record",
                    "--storage",
                    LaunchConfiguration("storage"),
                    "--output",
                    LaunchConfiguration("output"),
                    PythonExpression(
                        ["'--use-sim-time' if '", use_sim_time, "' == 'true' else ''"]
                    ),
                    LaunchConfiguration("topics"),
                ],
                shell=True,  # splits `topics` into one argument per topic
                output="screen",
                on_exit=exit_policy("ros2 bag record"),
            )
        ]
    params, line = recorder_fallback(context.launch_configurations)
    return [LogInfo(msg=line), package_node("recorder_node", parameters=[params])]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "topics", default_value=DEFAULT_TOPICS, description="Topics, space separated."
            ),
            DeclareLaunchArgument(
                "output",
                description="Bag folder to create (must not exist), e.g. demos/episode_0000.",
            ),
            DeclareLaunchArgument(
                "storage", default_value="mcap", description="Storage plugin: mcap | sqlite3."
            ),
            DeclareLaunchArgument(
                "use_sim_time",
                default_value="false",
                description="Stamp records with /clock (true when recording a simulation).",
            ),
            checked_arguments({"use_sim_time": boolean}),  # normalised to true/false
            OpaqueFunction(function=_recorder),
        ]
    )
