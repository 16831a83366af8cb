"""`dp-train --config CONFIG.yaml --data BAG... --out DIR`: train a policy on rosbag2 bags
(or LeRobotDataset folders, read into the same cache: data/lerobot_dataset.py).

Also runs under `torchrun --nproc_per_node=N -m diffusion_policy_node.train.cli ...` (DDP).
Progress and the ingest summary (one line per bag: steps, time base, clock offsets, skipped
messages, gaps, chunk CRCs) go to stderr; the last stdout line is a JSON summary. A run that
fails (e.g. on a bad bag) leaves no `--out` folder behind that it created.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ..config_util import add_overrides_argument
from ..data.bag_reader import BagReadError
from ..data.cache import CacheInfo, ensure_cache, format_ingest
from .config import RUN_SECTIONS, load_run_config
from .device import DistInfo, resolve_device, tune_cpu_malloc
from .trainer import Trainer


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dp-train",
        description="Train a Diffusion Policy on rosbag2 demonstrations.",
        epilog="Example: dp-train --config config/robots/sim_arm/train_small.yaml --data bags/ "
        "--out runs/small",
    )
    parser.add_argument(
        "--config", required=True, help="training YAML with policy:, data:, train: sections"
    )
    parser.add_argument(
        "--data",
        nargs="+",
        required=True,
        help="bags: rosbag2 folders, .mcap/.db3 files, or folders holding them; or "
        "LeRobotDataset folders (meta/info.json; v2.0/v2.1/v3.0, see docs/lerobot.md)",
    )
    parser.add_argument("--out", required=True, help="output folder (runs/<name>)")
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its train_state/"
    )
    add_overrides_argument(parser, RUN_SECTIONS, "train.steps=2000")
    parser.add_argument(
        "--stop-after",
        type=int,
        default=None,
        metavar="STEP",
        help="checkpoint and stop after this step (the LR schedule still runs to train.steps)",
    )
    parser.add_argument(
        "--require-crc",
        action="store_true",
        help="refuse any bag whose mcap chunks lack CRCs (damage inside them would go unseen); "
        "same as --set data.require_crc=true",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    info = DistInfo.from_env()
    logging.basicConfig(
        level=logging.INFO if info.is_main else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    out = Path(args.out)
    out_existed = out.exists()
    try:
        overrides = [*args.overrides, *(["data.require_crc=true"] if args.require_crc else [])]
        run = load_run_config(args.config, overrides)
        if resolve_device(run.train.device, info.local_rank).type == "cpu":
            tune_cpu_malloc()
        trainer = Trainer(
            run, args.data, args.out, resume=args.resume, progress=not args.quiet, dist_info=info
        )
        if info.is_main:
            _print_ingest(ensure_cache(trainer.bags, run.data, trainer.cache_dir))
        result = trainer.fit(stop_after=args.stop_after)
    except (BagReadError, ValueError) as exc:
        _remove_if_empty(out, out_existed)
        print(f"dp-train: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        _remove_if_empty(out, out_existed)
        print("dp-train: interrupted", file=sys.stderr)
        return 130
    if info.is_main:
        summary = {
            "out": str(result.out),
            "step": result.step,
            "loss": result.losses[-1][1] if result.losses else None,
            "best_val_loss": result.best_val_loss,
            "checkpoint": str(result.out / "latest"),
        }
        print(json.dumps(summary))
    return 0


def _print_ingest(info: CacheInfo) -> None:
    state = "built" if info.rebuilt else "up to date"
    print(
        f"dp-train: cache {info.path} {state}: {info.n_episodes} episode(s), {info.n_steps} steps",
        file=sys.stderr,
    )
    for line in format_ingest(info.ingest):
        print(f"dp-train: ingest {line}", file=sys.stderr)


def _remove_if_empty(out: Path, existed: bool) -> None:
    """A failed run does not leave behind an empty --out folder it created."""
    if not existed and out.is_dir() and not any(out.iterdir()):
        out.rmdir()


if __name__ == "__main__":
    raise SystemExit(main())
