"""Closed-loop evaluation and collection, above `train/`: `dp-eval` (evaluate.py), `dp-collect`
(collect.py), the seeded simulated-time rollout (rollout.py), the smoothness metrics of the
executed motion (smoothness.py), the operator prompt, the graph requirements of a checkpoint,
episode media, and the child processes they start. ROS-free: the nodes run as separate
processes (`ros/`)."""
