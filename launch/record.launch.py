"""Record demonstrations with `ros2 bag record` (needs a full ROS 2 install with rosbag2).

    ros2 launch diffusion_policy_node record.launch.py output:=demos/episode_0000

`topics` is a space-separated list (default: the topics config/robots/sim_arm/data.yaml trains on).
Without rosbag2 (PyPI wheels only), use the package's recorder_node instead: one bag per
episode, started and stopped with its ~/start and ~/stop services (see config/recorder_node.yaml).
`use_sim_time` is true or false in any case (`True` works); another value, or `ros2 bag record`
failing, ends the launch with one line and exit code 1.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess
from launch.substitutions import LaunchConfiguration, PythonExpression

from diffusion_policy_node.ros.launch_util import boolean, checked_arguments, exit_policy

DEFAULT_TOPICS = "/camera/image_raw /joint_states /arm_controller/joint_trajectory"


def generate_launch_description() -> LaunchDescription:
    use_sim_time = LaunchConfiguration("use_sim_time")
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
            ),
        ]
    )
