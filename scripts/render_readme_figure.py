"""Render docs/images/demo.png: the two simulated tasks of `make demo`, offscreen.

Left: the reach task (3-joint arm, red obstacle, green target) on held-out seed 1000, from the
overhead camera the policy sees. Right: the UR5e + gripper pick-and-place scene on seed 1000.

    MUJOCO_GL=egl python scripts/render_readme_figure.py [--out docs/images/demo.png]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
from PIL import Image

from diffusion_policy_node.sim.arm_task import ArmTask
from diffusion_policy_node.sim.pick_place import PickPlaceTask

SIZE = 320


def render(seed: int = 1000) -> np.ndarray:
    """(SIZE, 2·SIZE + 8, 3) uint8: reach and pick-place side by side."""
    with ArmTask() as reach:
        reach.reset(seed=seed)
        left = reach.render(SIZE, SIZE)
    with PickPlaceTask() as pick_place:
        pick_place.reset(seed=seed)
        right = pick_place.render(SIZE, SIZE)
    gap = np.full((SIZE, 8, 3), 255, dtype=np.uint8)
    return np.concatenate([left, gap, right], axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images/demo.png"))
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(render()).save(args.out, optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
