"""`dp-info CHECKPOINT`: validate a checkpoint folder and print what the node will run."""

from __future__ import annotations

import argparse
import json
import sys

from diffusion_policy_node.policy.checkpoint import CheckpointError, load_checkpoint, read_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dp-info", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="checkpoint folder (config.yaml + safetensors)")
    parser.add_argument(
        "--urdf",
        help="robot URDF: print the limits policy_node would take from it (default: the "
        "limits without a robot description, from the demonstrated range)",
    )
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
        "action_groups": _groups(config),
        "action_lead_s": config.action_lead,
        "action_range": {
            "min": policy.action_normalizer.min.tolist(),
            "max": policy.action_normalizer.max.tolist(),
        },
        "sampler": f"{config.noise_scheduler} x{config.num_inference_steps}",
        "prediction_type": config.prediction_type,
        "encoder": {
            "backbone_norm": config.backbone_norm,
            "width": config.encoder_width,
            "shared": config.share_encoder,
            "crop_shape": config.crop_shape,
        },
        "normalization": config.normalization or "min_max (state, action)",
        "meta": meta,
    }
    try:
        known = info["action_groups"] is not None
        info["limits"] = _limits(args.checkpoint, config, policy, args.urdf) if known else None
    except ValueError as exc:
        print(f"dp-info: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(info, indent=2))
    return 0


def _groups(config: object) -> list[dict] | None:
    """The action groups; None for a checkpoint that names neither groups nor joints (the node
    then needs joint_names, and its limits depend on them)."""
    try:
        return [g.to_dict() for g in config.groups]
    except ValueError:
        return None


def _limits(checkpoint: str, config: object, policy: object, urdf: str | None) -> dict:
    """Per commanded joint: the limits policy_node would use with default parameters (and
    `urdf` as its robot description), and where each came from (runtime/limits.py)."""
    from diffusion_policy_node.runtime.limits import read_urdf_file, resolve_limits
    from diffusion_policy_node.runtime.settings import PolicyNodeParams, resolve_settings

    settings = resolve_settings(PolicyNodeParams(checkpoint=str(checkpoint)), config)
    joints = read_urdf_file(urdf) if urdf else None
    limits, sources = resolve_limits(
        settings,
        policy.action_normalizer.min.detach().numpy(),
        policy.action_normalizer.max.detach().numpy(),
        joints,
        f"file {urdf}",
    )
    return {
        name: {
            "lower": float(limits.lower[i]),
            "upper": float(limits.upper[i]),
            "max_velocity": float(limits.max_velocity[i]),
            "position_from": sources.position[i],
            "velocity_from": sources.velocity[i],
        }
        for i, name in enumerate(settings.action_joints)
    }


if __name__ == "__main__":
    raise SystemExit(main())
