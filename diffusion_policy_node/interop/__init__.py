"""Interoperability with other robot-learning stacks (LeRobot); ROS-free, torch + numpy only."""
