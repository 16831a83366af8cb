"""ROS-free real-time logic: observation history, action schedule, inference worker."""
