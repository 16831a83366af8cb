"""rclpy nodes and msg <-> numpy conversions: the only layer that imports ROS."""
