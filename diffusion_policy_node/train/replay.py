"""Open-loop replay: run a checkpoint over recorded episodes and measure its action error.

For every step k of an episode the policy sees the observation window of steps
k-n_obs_steps+1 .. k (the first step repeated before the episode start, as in training), decoded
and resized by the same code the node uses (`data/images.py` via the bag reader), and predicts a
chunk. Its executed part (indices n_obs_steps-1 .. n_obs_steps-2+n_action_steps) targets steps
k .. k+n_action_steps-1 and is compared with the recorded actions of those steps (those inside
the episode). Errors are reported per joint (MAE, RMSE, in the action units: rad or m).

The figure shows the recorded actions and what the robot would have executed open loop: the
executed parts of the chunks predicted every n_action_steps steps, back to back.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..action_groups import ActionGroup
from ..data.bag_reader import Episode, find_bags, read_bag
from ..data.config import DataConfig
from ..policy.checkpoint import load_checkpoint, read_config
from ..policy.constants import OBS_IMAGES, OBS_STATE
from ..policy.modeling import DiffusionPolicy
from ..runtime.trajectory_follower import TrajectoryFollower
from .config import check_agreement
from .device import resolve_device
from .plots import plot_replay

__all__ = [
    "ActionErrors",
    "NodeCommand",
    "NodeComparison",
    "ReplayReport",
    "compare_node_commands",
    "error_lines",
    "node_targets",
    "observation_windows",
    "plot_comparison",
    "replay",
    "replay_episode",
]

log = logging.getLogger(__name__)


@dataclass
class ReplayReport:
    """Per-joint errors of the executed actions against the recorded ones."""

    checkpoint: str
    joint_names: list[str]
    episodes: int
    steps: int
    compared: int  # (step, chunk offset) pairs compared, per joint
    per_joint: dict[str, dict[str, float]]
    mae: float
    rmse: float
    png: str | None
    sampler: str
    sources: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint,
            "episodes": self.episodes,
            "steps": self.steps,
            "compared": self.compared,
            "sampler": self.sampler,
            "mae": self.mae,
            "rmse": self.rmse,
            "per_joint": self.per_joint,
            "png": self.png,
            "sources": self.sources,
        }


class ActionErrors:
    """Per-joint sums of |error| and error^2 over any number of (M, D) error batches: MAE and
    RMSE per joint and over all joints (what dp-replay and `dp-play --compare` report)."""

    def __init__(self, joint_names: Sequence[str]) -> None:
        self.joint_names = list(joint_names)
        self._abs = np.zeros(len(self.joint_names))
        self._sq = np.zeros(len(self.joint_names))
        self.count = 0  # rows (steps or step x chunk offset pairs) added, per joint

    def add(self, diff: np.ndarray) -> None:
        """Add (M, D) errors (predicted - recorded), D = len(joint_names)."""
        diff = np.asarray(diff, dtype=np.float64).reshape(-1, len(self.joint_names))
        self._abs += np.abs(diff).sum(axis=0)
        self._sq += np.square(diff).sum(axis=0)
        self.count += len(diff)

    def _need_data(self) -> None:
        if self.count == 0:
            raise ValueError("no errors were added: nothing was compared")

    def per_joint(self) -> dict[str, dict[str, float]]:
        self._need_data()
        mae, rmse = self._abs / self.count, np.sqrt(self._sq / self.count)
        return {
            name: {"mae": float(mae[j]), "rmse": float(rmse[j])}
            for j, name in enumerate(self.joint_names)
        }

    @property
    def mae(self) -> float:
        self._need_data()
        return float((self._abs / self.count).mean())

    @property
    def rmse(self) -> float:
        self._need_data()
        return float(np.sqrt(self._sq.sum() / (self.count * len(self.joint_names))))


def error_lines(per_joint: dict[str, dict[str, float]]) -> list[str]:
    """One printable line per joint: `name: MAE x  RMSE y`."""
    return [
        f"{name:>20}: MAE {err['mae']:.5f}  RMSE {err['rmse']:.5f}"
        for name, err in per_joint.items()
    ]


def plot_comparison(
    png_path: str | os.PathLike,
    joint_names: Sequence[str],
    recorded: Sequence[np.ndarray],
    predicted: Sequence[np.ndarray],
    per_joint: dict[str, dict[str, float]],
    title: str,
) -> Path:
    """The recorded and predicted (T_i, D) actions of each episode, back to back, one panel per
    joint with its MAE/RMSE (NaN rows of `predicted`, steps without a prediction, are gaps)."""
    starts = np.cumsum([0] + [len(r) for r in recorded[:-1]]).tolist()
    return plot_replay(
        Path(png_path),
        list(joint_names),
        np.concatenate(recorded),
        np.concatenate(predicted),
        starts,
        per_joint,
        title=title,
    )


def observation_windows(episode: Episode, steps: np.ndarray, n_obs_steps: int) -> dict:
    """Observation batches for `steps` of an episode: OBS_IMAGES (B, To, N, 3, H, W) uint8 and
    OBS_STATE (B, To, D) float32, the first step repeated before the episode start."""
    offsets = np.arange(n_obs_steps) - (n_obs_steps - 1)
    index = np.clip(steps[:, None] + offsets[None, :], 0, len(episode) - 1)  # (B, To)
    images = episode.images[index]  # (B, To, N, H, W, 3)
    return {
        OBS_IMAGES: torch.from_numpy(np.ascontiguousarray(images.transpose(0, 1, 2, 5, 3, 4))),
        OBS_STATE: torch.from_numpy(np.ascontiguousarray(episode.state[index], np.float32)),
    }


def replay_episode(
    policy: DiffusionPolicy, episode: Episode, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Executed actions of a chunk predicted at every step: (T, n_action_steps, D), and a
    (T, n_action_steps) mask of the offsets that fall inside the episode."""
    c = policy.config
    T = len(episode)
    executed = np.empty((T, c.n_action_steps, c.action_dim), np.float32)
    for start in range(0, T, batch_size):
        steps = np.arange(start, min(start + batch_size, T))
        chunk = policy.predict_action_chunk(observation_windows(episode, steps, c.n_obs_steps))
        first = c.n_obs_steps - 1  # the chunk index of the newest observation's step
        executed[steps] = chunk[:, first : first + c.n_action_steps].float().cpu().numpy()
    inside = (np.arange(T)[:, None] + np.arange(c.n_action_steps)[None, :]) < T
    return executed, inside


@dataclass
class NodeCommand:
    """One command a running policy node published, as `dp-play --compare` received it.

    receive_ns: the playback clock (the bag's time) when it arrived; start_ns: its
    header.stamp (JointTrajectory; None when unset, i.e. "start on receipt", and for
    Float64MultiArray, which has no header); tfs_s (P,) time_from_start of its points (empty
    for Float64MultiArray); positions (P, d) in the group's joint order ((1, d) for a
    Float64MultiArray).
    """

    receive_ns: int
    start_ns: int | None
    tfs_s: np.ndarray
    positions: np.ndarray


def node_targets(
    commands: Sequence[NodeCommand],
    group: ActionGroup,
    times_ns: np.ndarray,
    state_at: Any,
) -> np.ndarray:
    """(T, d) positions the node's commands of `group` asked for at `times_ns` (sorted), NaN
    before its first command.

    JointTrajectory groups: executed as joint_trajectory_controller would
    (`runtime.TrajectoryFollower`: the newest trajectory *received* by then, from its
    header.stamp on, starting from the desired position at its receipt; the first one from the
    measured `state_at(receive_ns)`, a (d,) array). Float64MultiArray groups: the newest command
    received at or before each time (a forward controller applies it at once).
    """
    d = len(group.joints)
    out = np.full((len(times_ns), d), np.nan)
    cmds = sorted(commands, key=lambda c: c.receive_ns)
    if not cmds:
        return out
    if not group.is_trajectory:
        receive = np.array([c.receive_ns for c in cmds], np.int64)
        idx = np.searchsorted(receive, np.asarray(times_ns, np.int64), side="right") - 1
        values = np.stack([c.positions.reshape(-1)[:d] for c in cmds])
        out[idx >= 0] = values[idx[idx >= 0]]
        return out
    follower = TrajectoryFollower(d)
    i = 0
    for k, t_ns in enumerate(np.asarray(times_ns, np.int64)):
        while i < len(cmds) and cmds[i].receive_ns <= t_ns:
            c = cmds[i]
            now = c.receive_ns * 1e-9
            current = follower.sample(now)
            if current is None:
                current = np.asarray(state_at(c.receive_ns), np.float64)
            start = None if c.start_ns is None else c.start_ns * 1e-9
            follower.set_trajectory(c.tfs_s, c.positions, start, now, current)
            i += 1
        sample = follower.sample(t_ns * 1e-9)
        if sample is not None:
            out[k] = sample
    return out


def _recorded_state(grid: np.ndarray, state: np.ndarray, t_ns: int) -> np.ndarray:
    """The recorded state (columns of one group) at the newest grid step at or before t_ns."""
    return state[max(0, int(np.searchsorted(grid, t_ns, side="right")) - 1)]


@dataclass
class NodeComparison:
    """The recorded actions of a bag's episodes against what a policy node commanded."""

    errors: ActionErrors
    recorded: list[np.ndarray]  # per episode (T, D)
    commanded: list[np.ndarray]  # per episode (T, D), NaN rows: no command yet
    steps: int
    sources: list[str]


def compare_node_commands(
    episodes: Sequence[Episode],
    groups: Sequence[ActionGroup],
    commands: dict[str, Sequence[NodeCommand]],
    state_joints: Sequence[str],
    dt: float,
) -> NodeComparison:
    """Per grid step t_k of each episode: the recorded action (the target for t_k + lead, the
    group's `action_lead`: one step ahead for recorded JointTrajectory commands) against the
    node's command of each group (`commands[group.name]`) sampled at that same time with
    `node_targets`. Steps before the node's first command of a group are not compared."""
    joints = [j for g in groups for j in g.joints]
    errors = ActionErrors(joints)
    recorded, commanded, sources = [], [], []
    for episode in episodes:
        grid = np.asarray(episode.times_ns, np.int64)
        parts = []
        for g in groups:
            cols = [list(state_joints).index(j) for j in g.joints]
            state_at = partial(_recorded_state, grid, episode.state[:, cols])
            lead_ns = round(g.action_lead(dt) * 1e9)
            parts.append(node_targets(commands.get(g.name, ()), g, grid + lead_ns, state_at))
        node = np.concatenate(parts, axis=1)
        seen = np.all(np.isfinite(node), axis=1)
        errors.add((node - episode.action)[seen])
        recorded.append(episode.action)
        commanded.append(node)
        sources.append(episode.source)
    return NodeComparison(
        errors=errors,
        recorded=recorded,
        commanded=commanded,
        steps=int(sum(len(r) for r in recorded)),
        sources=sources,
    )


def _data_config(config_path: str | os.PathLike | None, meta: dict[str, Any]) -> DataConfig:
    if config_path is not None:
        from ..data.config import load_data_config

        return load_data_config(config_path)
    if not isinstance(meta.get("data"), dict):
        raise ValueError(
            "the checkpoint's config.yaml has no meta.data (how to read bags: topics, command "
            "type); pass --data-config with a DataConfig YAML"
        )
    return DataConfig.from_dict(meta["data"], where="checkpoint meta.data")


def _left(max_episodes: int | None, done: int) -> int | None:
    return None if max_episodes is None else max(0, max_episodes - done)


def replay(
    checkpoint: str | os.PathLike,
    bags: Sequence[str | os.PathLike],
    out: str | os.PathLike | None = None,
    device: str = "auto",
    data_config: str | os.PathLike | None = None,
    batch_size: int = 64,
    noise_scheduler: str | None = None,
    num_inference_steps: int | None = None,
    seed: int = 0,
    max_episodes: int | None = None,
) -> ReplayReport:
    """Replay `bags` through `checkpoint`; write replay.json and replay.png to `out`."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: must be >= 1")
    checkpoint = Path(checkpoint)
    pconfig, meta = read_config(checkpoint)
    dconfig = _data_config(data_config, meta)
    check_agreement(pconfig, dconfig, where=f"checkpoint {checkpoint} vs its data settings")
    policy = load_checkpoint(
        checkpoint,
        device=resolve_device(device),
        noise_scheduler=noise_scheduler,
        num_inference_steps=num_inference_steps,
    )
    policy.seed(seed)
    c = policy.config
    joint_names = c.joint_names or [f"joint_{j}" for j in range(c.action_dim)]
    errors = ActionErrors(joint_names)
    recorded_all, predicted_all, sources = [], [], []
    n_episodes = 0
    for bag in find_bags(bags):
        if max_episodes is not None and n_episodes >= max_episodes:
            break
        for episode in read_bag(bag, dconfig).episodes[: _left(max_episodes, n_episodes)]:
            executed, inside = replay_episode(policy, episode, batch_size)
            T = len(episode)
            target_index = np.minimum(
                np.arange(T)[:, None] + np.arange(c.n_action_steps)[None, :], T - 1
            )
            errors.add((executed - episode.action[target_index])[inside])  # (M, D)
            # Receding horizon: the chunk predicted every n_action_steps steps, executed.
            plan = executed[:: c.n_action_steps].reshape(-1, c.action_dim)[:T]
            recorded_all.append(episode.action)
            predicted_all.append(plan)
            sources.append(episode.source)
            n_episodes += 1
            log.info("replayed %s: %d steps", episode.source, T)
    if errors.count == 0:
        raise ValueError(f"no episode to replay in {[str(b) for b in bags]}")
    per_joint = errors.per_joint()
    out_dir = Path(out) if out is not None else checkpoint.parent / "replay"
    png = plot_comparison(
        out_dir / "replay.png",
        joint_names,
        recorded_all,
        predicted_all,
        per_joint,
        title=f"{checkpoint}: open-loop replay ({c.noise_scheduler} x{c.num_inference_steps})",
    )
    report = ReplayReport(
        checkpoint=str(checkpoint),
        joint_names=list(per_joint),
        episodes=n_episodes,
        steps=int(sum(len(r) for r in recorded_all)),
        compared=errors.count,
        per_joint=per_joint,
        mae=errors.mae,
        rmse=errors.rmse,
        png=str(png),
        sampler=f"{c.noise_scheduler} x{c.num_inference_steps}",
        sources=sources,
    )
    (out_dir / "replay.json").write_text(json.dumps(report.to_dict(), indent=1))
    return report


def main(argv: list[str] | None = None) -> int:
    """`dp-replay --checkpoint CKPT --data BAG... [--out DIR]`; the last stdout line is JSON."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="dp-replay",
        description="Run a checkpoint open loop over recorded episodes; per-joint action error.",
    )
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder (e.g. runs/x/best)")
    parser.add_argument("--data", nargs="+", required=True, help="bags (folders or files)")
    parser.add_argument(
        "--out", default=None, help="output folder (default: <checkpoint>/../replay)"
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--data-config", default=None, help="DataConfig YAML (default: the checkpoint's meta.data)"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--scheduler", default=None, choices=["ddim", "ddpm"])
    parser.add_argument("--steps", type=int, default=None, help="denoising steps at inference")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-episodes", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        report = replay(
            args.checkpoint,
            args.data,
            out=args.out,
            device=args.device,
            data_config=args.data_config,
            batch_size=args.batch_size,
            noise_scheduler=args.scheduler,
            num_inference_steps=args.steps,
            seed=args.seed,
            max_episodes=args.max_episodes,
        )
    except ValueError as exc:
        print(f"dp-replay: error: {exc}", file=sys.stderr)
        return 2
    for line in error_lines(report.per_joint):
        print(line, file=sys.stderr)
    print(json.dumps(report.to_dict()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
