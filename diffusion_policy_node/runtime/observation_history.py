"""Observation history: the newest camera images and joint state, sampled once per control tick.

The node pushes inputs as they arrive (`update_image`, `update_state`, each with its header stamp)
and calls `sample(t)` on every control tick (docs/design.md#timing-model). The history keeps the
last `n_obs_steps` samples; the first sample is repeated to fill it, as Chi et al. pad the start
of an episode. `as_batch()` gives the policy batch (keys from `policy/constants.py`):

    OBS_IMAGES  (1, T, N, 3, H, W) uint8 RGB, cameras in `camera_names` order (HWC → CHW)
    OBS_STATE   (1, T, D)          float32

Time is float seconds from the node's clock (sim time when `use_sim_time`); nothing here reads a
clock itself.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from diffusion_policy_node.policy.constants import OBS_IMAGES, OBS_STATE

# Name of the joint-state input in `ages()` and in staleness reasons.
STATE_INPUT = "joint_state"


@dataclass(frozen=True)
class Staleness:
    """Result of `ObservationHistory.is_stale`; truthy when some input is stale.

    `inputs` names the stale inputs (camera names and/or `STATE_INPUT`); `reasons` has a
    human-readable sentence per input, `reason` them joined with "; " (empty when fresh).
    """

    stale: bool
    reason: str
    inputs: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()  # one per input

    def __bool__(self) -> bool:
        return self.stale


class ObservationHistory:
    """Ring of the last `n_obs_steps` (images, state) samples plus the age of every input."""

    def __init__(
        self,
        n_obs_steps: int,
        camera_names: Sequence[str],
        state_dim: int,
        image_shape: tuple[int, int] | None = None,
    ) -> None:
        """`image_shape` (H, W) is enforced when given; otherwise the first image fixes it."""
        if not isinstance(n_obs_steps, int) or n_obs_steps < 1:
            raise ValueError(f"n_obs_steps must be an int >= 1, got {n_obs_steps!r}")
        if not isinstance(state_dim, int) or state_dim < 1:
            raise ValueError(f"state_dim must be an int >= 1, got {state_dim!r}")
        names = list(camera_names)
        if any(not isinstance(n, str) or not n for n in names):
            raise ValueError(f"camera_names must be non-empty strings, got {names!r}")
        if len(set(names)) != len(names):
            raise ValueError(f"camera_names must be unique, got {names!r}")
        if STATE_INPUT in names:
            raise ValueError(f"camera_names must not contain the reserved name {STATE_INPUT!r}")
        if image_shape is not None:
            if len(image_shape) != 2 or min(image_shape) < 1:
                raise ValueError(f"image_shape must be (H, W) >= 1, got {image_shape!r}")
            image_shape = (int(image_shape[0]), int(image_shape[1]))
        self.n_obs_steps = n_obs_steps
        self.camera_names: tuple[str, ...] = tuple(names)
        self.state_dim = state_dim
        self._image_shape = image_shape
        self._images: dict[str, np.ndarray | None] = dict.fromkeys(names)
        self._image_stamps: dict[str, float | None] = dict.fromkeys(names)
        self._state: np.ndarray | None = None
        self._state_stamp: float | None = None
        self._ring_images: deque[np.ndarray] = deque(maxlen=n_obs_steps)
        self._ring_states: deque[np.ndarray] = deque(maxlen=n_obs_steps)
        self._last_tick: float | None = None
        # inputs whose next message is accepted whatever its stamp (after reset: clock jumps)
        self._accept_any: set[str] = set()

    # ------------------------------------------------------------------------------ inputs
    def update_image(self, camera: str, image: np.ndarray, stamp: float) -> bool:
        """Store the newest image (H, W, 3) uint8 RGB of `camera`, stamped `stamp` seconds.

        Returns False (and keeps the stored image) when `stamp` is older than the stored one, as
        happens with several publishers on one topic (after `reset()` the next message is
        accepted whatever its stamp, since the clock may have jumped back). The array is copied
        at `sample` time, so the caller must not modify it in place until then.
        """
        if camera not in self._images:
            raise ValueError(
                f"unknown camera {camera!r}; configured cameras are {list(self.camera_names)}"
            )
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"camera {camera!r}: expected an (H, W, 3) uint8 RGB image, got shape "
                f"{image.shape} dtype {image.dtype}; convert/resize it before update_image"
            )
        hw = (int(image.shape[0]), int(image.shape[1]))
        if self._image_shape is None:
            self._image_shape = hw
        elif hw != self._image_shape:
            raise ValueError(
                f"camera {camera!r}: image is {hw[0]}x{hw[1]} but the history holds "
                f"{self._image_shape[0]}x{self._image_shape[1]} images; resize all cameras to "
                "the policy's image size"
            )
        stamp = _finite_time(stamp, f"camera {camera!r} stamp")
        old = self._image_stamps[camera]
        if old is not None and stamp < old and camera not in self._accept_any:
            return False
        self._accept_any.discard(camera)
        self._images[camera] = image
        self._image_stamps[camera] = stamp
        return True

    def update_state(self, state: np.ndarray, stamp: float) -> bool:
        """Store the newest joint state (D,) stamped `stamp`; False if older than the stored
        one (see `update_image`)."""
        state = np.asarray(state, dtype=np.float32)
        if state.shape != (self.state_dim,):
            raise ValueError(
                f"{STATE_INPUT}: expected shape ({self.state_dim},), got {state.shape}; check "
                "the joint_names selection"
            )
        stamp = _finite_time(stamp, f"{STATE_INPUT} stamp")
        old = self._state_stamp
        if old is not None and stamp < old and STATE_INPUT not in self._accept_any:
            return False
        self._accept_any.discard(STATE_INPUT)
        self._state = state.copy()
        self._state_stamp = stamp
        return True

    @property
    def ready(self) -> bool:
        """True once every camera and the joint state have been received at least once."""
        return self._state is not None and all(v is not None for v in self._images.values())

    def missing_inputs(self) -> list[str]:
        """Inputs never received (camera names and/or `STATE_INPUT`)."""
        missing = [name for name, img in self._images.items() if img is None]
        if self._state is None:
            missing.append(STATE_INPUT)
        return missing

    # ------------------------------------------------------------------------------ ticks
    def sample(self, t: float) -> None:
        """Append the newest image(s) and state as the sample of tick time `t`.

        The first sample after construction or `reset()` fills all `n_obs_steps` slots.
        Raises RuntimeError if an input was never received and ValueError if `t` goes back in
        time (e.g. a simulation restart: call `reset()` first).
        """
        t = _finite_time(t, "tick time")
        if not self.ready:
            raise RuntimeError(
                f"cannot sample the observation history: no message received yet for "
                f"{self.missing_inputs()}; check the camera_topics/joint_states topics"
            )
        if self._last_tick is not None and t < self._last_tick:
            raise ValueError(
                f"tick time {t:.6f} s is before the previous tick {self._last_tick:.6f} s "
                "(clock jumped back?); call reset() first"
            )
        if self.camera_names:
            images = np.stack(
                [self._images[name].transpose(2, 0, 1) for name in self.camera_names]  # type: ignore[union-attr]
            )
        else:
            images = np.zeros((0, 3, 1, 1), dtype=np.uint8)
        state = self._state.copy()  # type: ignore[union-attr]
        if not self._ring_states:
            for _ in range(self.n_obs_steps):
                self._ring_images.append(images)
                self._ring_states.append(state)
        else:
            self._ring_images.append(images)
            self._ring_states.append(state)
        self._last_tick = t

    @property
    def n_samples(self) -> int:
        """Number of filled slots: 0 before the first sample, else `n_obs_steps`."""
        return len(self._ring_states)

    @property
    def last_sample_time(self) -> float | None:
        return self._last_tick

    def ages(self, t: float) -> dict[str, float | None]:
        """Age `t - stamp` in seconds of every input (cameras then `STATE_INPUT`); None if never
        received. Negative ages mean the stamp is ahead of the node's clock."""
        out: dict[str, float | None] = {}
        for name, stamp in self._image_stamps.items():
            out[name] = None if stamp is None else t - stamp
        out[STATE_INPUT] = None if self._state_stamp is None else t - self._state_stamp
        return out

    def is_stale(self, t: float, max_age: float) -> Staleness:
        """Which inputs are missing, older than `max_age` seconds, or stamped more than `max_age`
        ahead of `t` (a clock mismatch, e.g. sim time vs wall time), and why."""
        if not (max_age > 0 and math.isfinite(max_age)):
            raise ValueError(f"max_age must be a finite number > 0 s, got {max_age!r}")
        reasons: list[str] = []
        stale: list[str] = []
        for name, age in self.ages(t).items():
            what = f"camera {name!r} image" if name != STATE_INPUT else "joint state"
            if age is None:
                reasons.append(f"no {what} received yet")
            elif age > max_age:
                reasons.append(f"{what} is {age:.3f} s old (max_obs_age {max_age:.3f} s)")
            elif age < -max_age:
                reasons.append(
                    f"{what} is stamped {-age:.3f} s in the future (clock mismatch? check "
                    "use_sim_time)"
                )
            else:
                continue
            stale.append(name)
        return Staleness(bool(stale), "; ".join(reasons), tuple(stale), tuple(reasons))

    def as_batch(self) -> tuple[dict[str, np.ndarray], float]:
        """The policy batch (shapes in the module docstring) and the tick time of the newest
        sample. OBS_IMAGES is omitted when no camera is configured."""
        if self._last_tick is None:
            raise RuntimeError("the observation history is empty: call sample(t) first")
        batch = {OBS_STATE: np.stack(self._ring_states)[None].astype(np.float32, copy=False)}
        if self.camera_names:
            batch[OBS_IMAGES] = np.stack(self._ring_images)[None]
        return batch, self._last_tick

    def reset(self, clear_inputs: bool = False) -> None:
        """Forget the sampled history (new episode). The newest inputs and their stamps are kept
        unless `clear_inputs`, since they still describe the robot's present; the next message
        of each input is accepted even if stamped earlier (simulation restart)."""
        self._accept_any = {*self.camera_names, STATE_INPUT}
        self._ring_images.clear()
        self._ring_states.clear()
        self._last_tick = None
        if clear_inputs:
            self._images = dict.fromkeys(self.camera_names)
            self._image_stamps = dict.fromkeys(self.camera_names)
            self._state = None
            self._state_stamp = None


def _finite_time(value: float, what: str) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{what} must be a finite time in seconds, got {value!r}")
    return value
