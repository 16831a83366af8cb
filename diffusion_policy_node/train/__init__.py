"""Training loop, checkpoints during training, evaluation metrics (ROS-free)."""
