"""diffusion_policy_node: visuomotor Diffusion Policy for ROS 2 robot arms.

Layers (imports point only downwards; only `ros/` imports rclpy or message packages):
`ros/` → `runtime/`, `train/` → `data/` → `policy/`, and `sim/` (docs/design.md#layers).
"""

__version__ = "0.1.0"
