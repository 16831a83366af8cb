"""DataConfig: how demonstration bags become training arrays (topics, joints, timing, windows)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffusion_policy_node.action_groups import (
    ActionGroup,
    action_joints,
    check_groups,
    parse_groups,
    single_group,
)
from diffusion_policy_node.config_util import dataclass_from_mapping, load_yaml

ACTION_SOURCES = ("command", "next_state")
COMMAND_TYPES = ("JointTrajectory", "Float64MultiArray")
TIMESTAMP_SOURCES = ("header", "record")
WINDOW_ENDS = ("hold", "action_steps")  # see data/sampler.py


# The single-controller fields; with action_groups they must keep these values.
_LEGACY_DEFAULTS = {
    "action_source": "command",
    "command_topic": "/arm_controller/joint_trajectory",
    "command_type": "JointTrajectory",
}


def _bad(name: str, value: Any, why: str) -> ValueError:
    return ValueError(f"DataConfig.{name}={value!r}: {why}")


def _check_topic(name: str, topic: Any) -> None:
    if not isinstance(topic, str) or not topic.startswith("/") or topic.endswith("/"):
        raise _bad(name, topic, "expected a fully qualified topic name such as '/joint_states'")


@dataclass
class DataConfig:
    """Which topics of a bag form an observation/action pair, and on what time grid.

    - Every stream is resampled on a grid of step `dt` seconds: the value at grid time g is the
      newest sample at or before g. The grid of an episode runs from the moment every required
      stream (cameras, joint states, and the command topic when `action_source="command"`) has
      produced a sample to the last sample of the stream that stops first.
    - One time base per bag, never mixed: `timestamp_source="header"` times every message by
      its `header.stamp` if every required topic carries stamps; if one has no header
      (Float64MultiArray) or zero stamps, the whole bag is timed by record (receive) time, with
      a warning and the header-to-record clock offsets in the ingest summary. `"record"` always
      uses the record time.
    - `max_gap` (seconds, default 3 * dt): a camera or joint-state stream silent for longer is
      not filled by repeating its last sample; the steps in the gap are dropped and the episode
      is split there (counted in the ingest summary). A header stamp more than `max_gap` ahead
      of the messages after it is an outlier and skipped.
    - The state is `joint_names`, read by name from `joint_state_topic`.
    - The action is `action_groups` (action_groups.py): one group per controller, each with
      its joints, command topic, message type and source. `source: command` reads the group's
      topic: a `JointTrajectory` is evaluated at grid time + dt (relative to its start time),
      a `Float64MultiArray` (positions in the group's joint order) is taken as is;
      `source: next_state` uses the group's joint positions one step later. The action vector
      is the groups' joints concatenated. Without `action_groups`, the older single-controller
      fields `command_topic`/`command_type`/`action_source` make one group of all joints.
    - `episode_split="bag"`: one bag is one episode. A topic name instead: every message on that
      topic (any type, content ignored) ends the current episode and starts the next one.
    - Episodes shorter than `horizon` steps are skipped and reported (see `min_episode_steps`).
    - `window_end`: how training windows cover an episode's end (data/sampler.py). `"hold"`
      (default): every step, the last one included, is an observation, and the actions past
      the end repeat the last one (hold). `"action_steps"`: Chi et al.'s `pad_after =
      n_action_steps - 1`, padded targets left out of the loss; the last steps of each episode
      are then never an observation (record a hold of about `n_action_steps * dt` after the
      last event, e.g. a gripper close). It changes the windows only, not the cache.
    - `require_crc`: refuse a bag unless every mcap chunk carries its CRC (`dp-train
      --require-crc`); without it a bag whose chunks lack CRCs is read with one warning, since
      damage inside those chunks cannot be detected. sqlite3 bags have no chunk CRCs.
    """

    camera_topics: list[str] = field(default_factory=lambda: ["/camera/image_raw"])
    image_size: tuple[int, int] = (96, 96)
    joint_state_topic: str = "/joint_states"
    joint_names: list[str] = field(default_factory=list)
    action_source: str = "command"
    command_topic: str = "/arm_controller/joint_trajectory"
    command_type: str = "JointTrajectory"
    timestamp_source: str = "header"
    dt: float = 0.1
    max_gap: float | None = None
    episode_split: str = "bag"
    n_obs_steps: int = 2
    horizon: int = 16
    n_action_steps: int = 8
    action_groups: list[dict[str, Any]] | None = None
    window_end: str = "hold"
    require_crc: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.camera_topics, str):
            raise _bad("camera_topics", self.camera_topics, "expected a list of topic names")
        if isinstance(self.joint_names, str):
            raise _bad("joint_names", self.joint_names, "expected a list of joint names")
        self.camera_topics = list(self.camera_topics)
        self.joint_names = list(self.joint_names)
        if self.action_groups is not None:
            self.action_groups = [
                g.to_dict() if isinstance(g, ActionGroup) else g for g in self.action_groups
            ]
        try:
            self.image_size = tuple(int(v) for v in self.image_size)  # type: ignore[assignment]
        except (TypeError, ValueError):
            raise _bad("image_size", self.image_size, "expected [height, width]") from None
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        if not self.camera_topics:
            raise _bad("camera_topics", self.camera_topics, "need at least one camera topic")
        for topic in self.camera_topics:
            _check_topic("camera_topics", topic)
        if len(set(self.camera_topics)) != len(self.camera_topics):
            raise _bad("camera_topics", self.camera_topics, "duplicate topic")
        if len(self.image_size) != 2 or min(self.image_size) < 8:
            raise _bad("image_size", self.image_size, "expected [height, width], each >= 8")
        _check_topic("joint_state_topic", self.joint_state_topic)
        if not self.joint_names or not all(isinstance(j, str) and j for j in self.joint_names):
            raise _bad("joint_names", self.joint_names, "need a non-empty list of joint names")
        if len(set(self.joint_names)) != len(self.joint_names):
            raise _bad("joint_names", self.joint_names, "duplicate joint name")
        if self.action_source not in ACTION_SOURCES:
            raise _bad("action_source", self.action_source, f"expected one of {ACTION_SOURCES}")
        _check_topic("command_topic", self.command_topic)
        if self.command_type not in COMMAND_TYPES:
            raise _bad("command_type", self.command_type, f"expected one of {COMMAND_TYPES}")
        if self.action_groups is not None:
            legacy = {
                name: getattr(self, name)
                for name, default in _LEGACY_DEFAULTS.items()
                if getattr(self, name) != default
            }
            if legacy:
                raise _bad(
                    "action_groups",
                    "...",
                    f"set together with {sorted(legacy)}: with action_groups, each group names "
                    "its own topic, type and source; remove the single-controller fields",
                )
            parse_groups(self.action_groups, where="DataConfig.action_groups")
        check_groups(self.groups, self.joint_names, where="DataConfig.action_groups")
        if self.timestamp_source not in TIMESTAMP_SOURCES:
            raise _bad(
                "timestamp_source", self.timestamp_source, f"expected one of {TIMESTAMP_SOURCES}"
            )
        if isinstance(self.dt, bool) or not isinstance(self.dt, (int, float)):
            raise _bad("dt", self.dt, "must be a number of seconds")
        if not (math.isfinite(self.dt) and self.dt >= 1e-3):
            raise _bad("dt", self.dt, "must be a finite number of seconds >= 0.001")
        if self.max_gap is not None:
            if isinstance(self.max_gap, bool) or not isinstance(self.max_gap, (int, float)):
                raise _bad("max_gap", self.max_gap, "must be a number of seconds (or null)")
            if not (math.isfinite(self.max_gap) and self.max_gap >= self.dt):
                raise _bad(
                    "max_gap", self.max_gap, f"must be finite and >= dt ({self.dt} s), or null"
                )
        if self.episode_split != "bag":
            try:
                _check_topic("episode_split", self.episode_split)
            except ValueError:
                raise _bad(
                    "episode_split", self.episode_split, "expected 'bag' or a marker topic name"
                ) from None
            used = {*self.camera_topics, self.joint_state_topic, *self.command_topics}
            if self.episode_split in used:
                raise _bad("episode_split", self.episode_split, "is also a data topic")
        for name in ("n_obs_steps", "horizon", "n_action_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise _bad(name, value, "must be an integer >= 1")
        if not isinstance(self.require_crc, bool):
            raise _bad("require_crc", self.require_crc, "must be true or false")
        if self.window_end not in WINDOW_ENDS:
            raise _bad("window_end", self.window_end, f"expected one of {WINDOW_ENDS}")
        if self.n_obs_steps - 1 + self.n_action_steps > self.horizon:
            raise _bad(
                "n_action_steps",
                self.n_action_steps,
                f"n_obs_steps - 1 + n_action_steps must be <= horizon ({self.horizon})",
            )

    @property
    def dt_ns(self) -> int:
        """The grid step in integer nanoseconds (grid times are exact integers)."""
        return round(self.dt * 1e9)

    @property
    def max_gap_s(self) -> float:
        """Longest silence of a sensor stream that is still filled (default 3 * dt)."""
        return float(self.max_gap) if self.max_gap is not None else 3 * self.dt

    @property
    def max_gap_ns(self) -> int:
        return round(self.max_gap_s * 1e9)

    @property
    def n_cameras(self) -> int:
        return len(self.camera_topics)

    @property
    def state_dim(self) -> int:
        return len(self.joint_names)

    @property
    def groups(self) -> tuple[ActionGroup, ...]:
        """The action groups (one group 'arm' of all joints without `action_groups`)."""
        if self.action_groups is None:
            return single_group(
                self.joint_names, self.command_topic, self.command_type, self.action_source
            )
        return parse_groups(self.action_groups, where="DataConfig.action_groups")

    @property
    def action_joints(self) -> tuple[str, ...]:
        return action_joints(self.groups)

    @property
    def action_dim(self) -> int:
        return len(self.action_joints)

    @property
    def command_topics(self) -> list[str]:
        """The recorded command topics the actions are read from (source: command)."""
        return [g.topic for g in self.groups if g.source == "command"]

    @property
    def min_episode_steps(self) -> int:
        """Episodes with fewer grid steps than one action window (`horizon`) are skipped."""
        return self.horizon

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML/JSON-safe dict (lists, not tuples)."""
        out = dataclasses.asdict(self)
        out["image_size"] = list(self.image_size)
        if self.action_groups is None:
            del out["action_groups"]  # single-controller configs hash as before groups existed
        return out

    def content_hash(self) -> str:
        """sha256 of the settings; a cache built with another hash is rebuilt. `window_end`
        is left out: it changes the windows, not the cached arrays."""
        settings = self.to_dict()
        del settings["window_end"]
        blob = json.dumps(settings, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()

    @classmethod
    def from_dict(cls, data: Any, where: str = "data config") -> DataConfig:
        """Build from a mapping (e.g. parsed YAML); unknown keys are an error naming `where`."""
        return dataclass_from_mapping(cls, data, where)


def load_data_config(path: str | Path) -> DataConfig:
    """Read a DataConfig from YAML: either its fields at the top level or under a `data:` key."""
    data = load_yaml(path, "data config")
    if isinstance(data, dict) and isinstance(data.get("data"), dict):
        data = data["data"]
    return DataConfig.from_dict(data, where=f"data config {path}")
