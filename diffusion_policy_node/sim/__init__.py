"""MuJoCo arm, task and scripted expert (ROS-free)."""
