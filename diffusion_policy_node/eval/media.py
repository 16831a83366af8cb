"""Media of an evaluation run (ROS-free): the episode video and the summary figure.

`EpisodeVideo` collects camera frames of a few episodes and writes one mp4 (OpenCV's `mp4v`
encoder, which opencv-python ships with), each frame enlarged with nearest-neighbour pixels and
captioned with the episode's seed and, after it ended, its outcome. `plot_eval_summary` draws the
outcomes, times to success and the side on which the arm passed the obstacle per episode.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from diffusion_policy_node.train.plots import pyplot, save_figure

# The policy node's running totals (~/status): an episode record carries their increase over
# the episode (status after it minus status before it); the summary sums them.
COUNTER_KEYS = (
    "inference_count",
    "inference_errors",
    "timed_ticks",
    "missed_ticks",
    "position_clamps",
    "velocity_clamps",
    "nonfinite_commands",
    "overruns",
    "dry_ticks",
)

# Counted by the node from its last ~/start (its timing statistics, which ~/start clears):
# dp-eval starts the node for every episode, so the value after an episode is the episode's.
SINCE_START_KEYS = ("timed_ticks", "missed_ticks")

OUTCOME_COLOURS = {
    "success": (40, 160, 40),
    "collision": (200, 40, 40),
    "failure": (150, 60, 170),
    "timeout": (200, 140, 0),
}


def outcome(record: dict[str, Any]) -> str:
    """success | collision | failure | timeout of a robot-judged episode record: `failure` when
    the robot said why the episode failed (`failure_reason`, the protocol's optional `failure`
    key), `timeout` when a failed episode carries no reason. (An operator-judged record is
    success or failure as the person answered.)"""
    if record.get("success"):
        return "success"
    if record.get("collided"):
        return "collision"
    return "failure" if record.get("failure_reason") else "timeout"


def failure_reason(report: dict[str, Any]) -> str | None:
    """The episode protocol's optional `failure` key of a failed episode's report (why the robot
    ended it, e.g. "closed off target"), as text; None when absent, empty or the episode
    succeeded."""
    value = report.get("failure")
    if value is None or report.get("success"):
        return None
    return str(value).strip() or None


def reason_suffix(record: dict[str, Any]) -> str:
    """What follows an episode's outcome in progress lines: ": REASON" when the record has a
    failure reason, else nothing."""
    reason = record.get("failure_reason")
    return f": {reason}" if reason else ""


def episode_counters(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int | None]:
    """Per-episode values of the node's counters (COUNTER_KEYS): `after - before` for running
    totals (a total that went down, the node restarted, counts from zero), `after` for those
    counted from the episode's ~/start (SINCE_START_KEYS); None where a status lacks it."""
    out: dict[str, int | None] = {}
    for key in COUNTER_KEYS:
        a, b = after.get(key), before.get(key)
        if not isinstance(a, (int, float)):
            out[key] = None
        elif key in SINCE_START_KEYS or not isinstance(b, (int, float)) or a < b:
            out[key] = int(a)
        else:
            out[key] = int(a - b)
    return out


class EpisodeVideo:
    """Frames (H, W, 3) uint8 RGB of consecutive episodes -> one mp4 at `fps` (sim time)."""

    def __init__(self, path: str | Path, fps: float, scale: int = 4) -> None:
        if not fps > 0:
            raise ValueError(f"EpisodeVideo: fps={fps!r} must be > 0")
        if scale < 1:
            raise ValueError(f"EpisodeVideo: scale={scale!r} must be >= 1")
        self.path = Path(path)
        self.fps = float(fps)
        self.scale = int(scale)
        self.frames: list[np.ndarray] = []
        self.episodes = 0

    def add_episode(self, frames: Sequence[np.ndarray], caption: str, result: str) -> None:
        """Append one episode: its frames captioned, then half a second of the last frame with
        the outcome (`result`: a key of OUTCOME_COLOURS or free text)."""
        if not frames:
            return
        for frame in frames:
            self.frames.append(self._render(frame, caption, None))
        last = self._render(frames[-1], caption, result)
        self.frames.extend([last] * max(1, round(0.5 * self.fps)))
        self.episodes += 1

    def _render(self, rgb: np.ndarray, caption: str, result: str | None) -> np.ndarray:
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(
                f"EpisodeVideo: frames must be (H, W, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}"
            )
        big = cv2.resize(rgb, None, fx=self.scale, fy=self.scale, interpolation=cv2.INTER_NEAREST)
        bgr = np.ascontiguousarray(big[:, :, ::-1])
        font, size = cv2.FONT_HERSHEY_SIMPLEX, 0.4 * self.scale / 3
        cv2.putText(bgr, caption, (4, 14), font, size, (255, 255, 255), 1, cv2.LINE_AA)
        if result is not None:
            r, g, b = OUTCOME_COLOURS.get(result, (255, 255, 255))
            y = bgr.shape[0] - 8
            cv2.putText(bgr, result, (4, y), font, 1.5 * size, (b, g, r), 2, cv2.LINE_AA)
        return bgr

    def write(self) -> Path | None:
        """Write the mp4 (next to the path, then renamed into place); None without frames."""
        if not self.frames:
            return None
        h, w = self.frames[0].shape[:2]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.stem}.tmp-{os.getpid()}.mp4")
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
        if not writer.isOpened():
            raise RuntimeError(f"EpisodeVideo: OpenCV cannot write mp4 to {tmp}")
        try:
            for frame in self.frames:
                writer.write(frame)
        finally:
            writer.release()
        os.replace(tmp, self.path)
        return self.path


def plot_eval_summary(
    records: Sequence[dict[str, Any]], summary: dict[str, Any], png_path: str | Path
) -> Path:
    """Three panels: outcome per episode (seed order), time to success, side passed."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    try:
        ax = axes[0]
        for i, rec in enumerate(records):
            kind = rec["outcome"]
            colour = [c / 255 for c in OUTCOME_COLOURS[kind]]
            ax.bar(i, 1.0, color=colour, width=0.9)
        handles = [
            plt.Rectangle((0, 0), 1, 1, color=[c / 255 for c in rgb])
            for rgb in OUTCOME_COLOURS.values()
        ]
        ax.legend(handles, list(OUTCOME_COLOURS), loc="upper center", ncol=4, fontsize=8)
        ax.set_ylim(0, 1.3)  # room for the legend above the bars
        ax.set_yticks([])
        ax.set_xlabel("episode")
        ax.set_title(
            f"success {summary.get('successes', 0)}/{summary.get('episodes', 0)} "
            f"({100 * summary.get('success_rate', 0.0):.0f}%)"
        )
        ax = axes[1]
        times = [r["time"] for r in records if r.get("success")]
        if times:
            ax.hist(times, bins=min(10, len(times)), color="tab:green")
        ax.set_xlabel("time to success (s, sim)")
        ax.set_ylabel("episodes")
        ax.set_title("time to success")
        ax = axes[2]
        sides = ["left", "right", None]
        counts = [sum(r.get("passed_side") == s for r in records) for s in sides]
        ax.bar(["left", "right", "never passed"], counts, color=["tab:blue", "tab:orange", "grey"])
        ax.set_title("side the arm passed the obstacle on")
        fig.suptitle(str(summary.get("policy", "")), fontsize=9)
        fig.tight_layout()
        return save_figure(fig, Path(png_path))
    finally:
        plt.close(fig)
