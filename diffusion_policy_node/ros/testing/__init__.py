"""Test tools for trying the node without a robot; not product nodes.

`fake_sensors` publishes synthetic camera images and joint states (with bad-input modes) and
`jtc_consumer` stands in for ros2_control's joint_trajectory_controller. The ROS tests and
`bench/control_jitter.py` run them; they are installed as the `fake_sensors` and
`jtc_consumer` executables for trying `policy_node` by hand. They live under `ros/` because
they import rclpy (docs/design.md#layers: only `ros/` may).
"""
