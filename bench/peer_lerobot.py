"""The peer: LeRobot's DiffusionPolicy (lerobot 0.3.2, torch 2.14.1) timed as a benchmark child.

Runs in the peer venv (`make bench-peer`), never in ours: it imports lerobot and stdlib only.
It builds LeRobot's DiffusionPolicy with its PushT preset (ResNet-18 with GroupNorm, spatial
softmax 32 keypoints, 96x96 images cropped to 84x84, n_obs_steps 2, horizon 16, 100 training
steps, squaredcos_cap_v2) and the U-Net widths of our preset (`--down-dims`, paper 512,1024,2048
or small 64,128,256), with random weights (no download) and the same input shapes as ours, then
serves timing requests on stdin/stdout (bench/_common.py `serve`):

  {"op": "run", "n": 1}   infer: `reset()` + `select_action(obs)`, LeRobot's own path for a
                          chunk (normalise, queue, encode, all denoising steps, unnormalise);
                          train: one optimisation step at `--batch-size` on an in-memory batch
                          (forward loss, backward, grad-clip 10, Adam from LeRobot's preset) —
                          no data loading, the peer's best case.
                          -> {"times": [seconds, ...]}
  {"op": "quit"}          -> {"peak_rss_mib": ...}

bench/inference_latency.py and bench/train_throughput.py start it next to ours and interleave
the requests. By hand:

    .venv-peer/bin/python bench/peer_lerobot.py --mode infer --down-dims 64,128,256 <<< \
      '{"op": "run", "n": 3}'
"""

from __future__ import annotations

import argparse
import time

import torch

try:  # run as a script: bench/ is on sys.path
    from _common import serve
except ImportError:  # imported as bench.peer_lerobot
    from bench._common import serve


def build_policy(args: argparse.Namespace):
    if args.checkpoint:  # a saved LeRobot DP (e.g. one that dp-import lerobot converted)
        from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy

        policy = DiffusionPolicy.from_pretrained(args.checkpoint)
        return policy.config, policy
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig
    from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy

    h, w = args.image_size
    config = DiffusionConfig(
        input_features={
            "observation.image": PolicyFeature(type=FeatureType.VISUAL, shape=(3, h, w)),
            "observation.state": PolicyFeature(type=FeatureType.STATE, shape=(args.state_dim,)),
        },
        output_features={
            "action": PolicyFeature(type=FeatureType.ACTION, shape=(args.action_dim,)),
        },
        down_dims=tuple(args.down_dims),
        crop_shape=(84, 84),
        noise_scheduler_type=args.scheduler.upper(),
        num_inference_steps=args.steps,
        device="cpu",
    )
    # LeRobot's dataset stats carry mean/std/min/max for every feature (its loader reads "mean"
    # to tell numpy from torch even where the mode is min-max).
    shapes = {"observation.image": (3, 1, 1), "observation.state": (args.state_dim,)}
    shapes["action"] = (args.action_dim,)
    stats = {
        key: {
            "mean": torch.full(shape, 0.5),
            "std": torch.full(shape, 0.25),
            "min": -torch.ones(shape),
            "max": torch.ones(shape),
        }
        for key, shape in shapes.items()
    }
    torch.manual_seed(0)
    return config, DiffusionPolicy(config, dataset_stats=stats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["infer", "train"], default="infer")
    parser.add_argument(
        "--checkpoint", help="load this pretrained_model (its own config) instead of the preset"
    )
    parser.add_argument("--down-dims", default="512,1024,2048")
    parser.add_argument("--state-dim", type=int, default=2)
    parser.add_argument("--action-dim", type=int, default=2)
    parser.add_argument("--image-size", default="96,96")
    parser.add_argument("--scheduler", default="ddim", choices=["ddim", "ddpm"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2, help="0: torch's default")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    args.down_dims = [int(d) for d in args.down_dims.split(",")]
    args.image_size = [int(s) for s in args.image_size.split(",")]
    if args.threads:
        torch.set_num_threads(args.threads)
    config, policy = build_policy(args)
    params = sum(p.numel() for p in policy.parameters())
    gen = torch.Generator().manual_seed(0)
    h, w = args.image_size

    import lerobot

    info = {
        "impl": "lerobot",
        "lerobot": getattr(lerobot, "__version__", "0.3.2"),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "params": params,
        "down_dims": list(config.down_dims),
        "mode": args.mode,
    }

    if args.mode == "infer":
        policy.eval()
        obs = {
            key: torch.rand(1, *ft.shape, generator=gen)
            for key, ft in config.image_features.items()
        }
        state_dim = config.robot_state_feature.shape[0]
        obs["observation.state"] = torch.rand(1, state_dim, generator=gen) * 2 - 1

        def run(n: int) -> dict:
            times, cpu = [], []
            for _ in range(n):
                t0, c0 = time.perf_counter(), time.process_time()
                policy.reset()
                policy.select_action(dict(obs))
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
            return {"times": times, "cpu": cpu}

        for _ in range(2):  # warm-up, as ours
            run(1)
        serve(info, {"run": run})
        return

    policy.train()
    B, To, H = args.batch_size, config.n_obs_steps, config.horizon
    batch = {
        "observation.image": torch.rand(B, To, 3, h, w, generator=gen),
        "observation.state": torch.rand(B, To, args.state_dim, generator=gen) * 2 - 1,
        "action": torch.rand(B, H, args.action_dim, generator=gen) * 2 - 1,
        "action_is_pad": torch.zeros(B, H, dtype=torch.bool),
    }
    preset = config.get_optimizer_preset()
    optimizer = preset.build(policy.get_optim_params())

    def train(n: int) -> dict:
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            loss, _ = policy.forward(dict(batch))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), preset.grad_clip_norm)
            optimizer.step()
            optimizer.zero_grad()
            times.append(time.perf_counter() - t0)
        return {"times": times}

    train(1)  # warm-up
    serve({**info, "batch_size": B, "data_loading": False}, {"run": train})


if __name__ == "__main__":
    main()
