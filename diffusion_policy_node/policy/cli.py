"""`dp-info CHECKPOINT`: validate a checkpoint folder and print what the node will run."""

from __future__ import annotations

import argparse
import json
import sys

from .checkpoint import CheckpointError, load_checkpoint, read_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dp-info", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="checkpoint folder (config.yaml + safetensors)")
    args = parser.parse_args(argv)
    try:
        config, meta = read_config(args.checkpoint)
        policy = load_checkpoint(args.checkpoint)
    except CheckpointError as exc:
        print(f"dp-info: {exc}", file=sys.stderr)
        return 2
    info = {
        "checkpoint": str(args.checkpoint),
        "params": sum(p.numel() for p in policy.parameters()),
        "network": config.network,
        "control_rate_hz": config.control_rate_hz,
        "camera_topics": config.camera_topics,
        "joint_names": config.joint_names,
        "action_range": {
            "min": policy.action_normalizer.min.tolist(),
            "max": policy.action_normalizer.max.tolist(),
        },
        "sampler": f"{config.noise_scheduler} x{config.num_inference_steps}",
        "meta": meta,
    }
    print(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
