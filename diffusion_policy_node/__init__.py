"""diffusion_policy_node: visuomotor Diffusion Policy for ROS 2 robot arms.

Layers, top to bottom (imports point only downwards; only `ros/` imports rclpy or message
packages): `ros/` → `eval/` → `train/` → `interop/` → `sim/` → `data/` → `runtime/` →
`policy/` → the modules at the package root (docs/design.md#layers).
"""

__version__ = "0.1.0"

# OpenMP reads its wait policy once, when torch loads it: set it before anything imports torch
# (cpu_threads.py says why; a value already in the environment wins).
from .cpu_threads import apply_omp_defaults as _apply_omp_defaults

_apply_omp_defaults()
