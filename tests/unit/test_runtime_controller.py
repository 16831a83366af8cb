"""The control tick without ROS: a fake clock, a fake inference worker and a list of commands.

dt = 0.1 s, n_obs_steps = 2, n_action_steps = 8, horizon 16: a chunk observed at t_obs gives
actions chunk[1:16] at grid steps t_obs + i*dt (i = 0..14); the plan is the first 8 (the next
inference is timed to land by t_obs + 0.7), the rest is executed only when it is late.
Limits come from the action range [-1, 1] widened by 10 %: [-1.2, 1.2], max velocity 2.4/s
(0.24 per tick).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from diffusion_policy_node.policy.config import PolicyConfig
from diffusion_policy_node.policy.constants import (
    INPAINT_ACTIONS,
    INPAINT_WEIGHTS,
    OBS_IMAGES,
    OBS_STATE,
)
from diffusion_policy_node.runtime.controller import STREAM, TRAJECTORY, Command, Controller
from diffusion_policy_node.runtime.inference_worker import InferenceResult, LatencyStats
from diffusion_policy_node.runtime.settings import PolicyInfo, PolicyNodeParams, resolve_settings

DT = 0.1
CAM = "/cam"
JOINTS = ["a", "b", "c"]
CONFIG = PolicyConfig(
    camera_topics=[CAM],
    image_size=(8, 8),
    crop_shape=None,
    joint_names=JOINTS,
    state_dim=3,
    action_dim=3,
    dt=DT,
    n_obs_steps=2,
    horizon=16,
    n_action_steps=8,
)
INFO = PolicyInfo("cpu", np.full(3, -1.0), np.full(3, 1.0), 10)
IMAGE = np.zeros((8, 8, 3), np.uint8)


class FakeWorker:
    """The `Worker` protocol by hand: submissions are recorded, results delivered by the test."""

    def __init__(self, latency: float | None = None) -> None:
        self.latency_estimate = latency
        self.submitted: list[tuple[dict, float]] = []
        self.busy = False
        self.alive = True
        self.last_error: BaseException | None = None
        self.completed_count = 0
        self.error_count = 0
        self.resets = 0
        self._result: InferenceResult | None = None

    def submit(self, obs: dict, t_obs: float) -> bool:
        if self.busy:
            return False
        self.submitted.append((obs, t_obs))
        self.busy = True
        return True

    def deliver(self, chunk: np.ndarray, t_obs: float | None = None) -> None:
        """Finish the request in flight with `chunk` (H, D)."""
        assert self.busy
        t = self.submitted[-1][1] if t_obs is None else t_obs
        self._result, self.busy = InferenceResult(chunk, t, 0.05), False
        self.completed_count += 1

    def fail(self, error: BaseException) -> None:
        t = self.submitted[-1][1]
        self._result, self.busy = InferenceResult(None, t, 0.05, error), False
        self.error_count += 1

    def poll(self) -> InferenceResult | None:
        result, self._result = self._result, None
        return result

    def reset(self) -> None:
        self.resets += 1
        self.busy, self._result = False, None

    def warm_up(self, obs: dict, n: int = 2) -> InferenceResult:
        return InferenceResult(np.zeros((16, 3)), float("nan"), 0.05)

    def latency_stats(self) -> LatencyStats:
        return LatencyStats(0, None, None, None, None)


class Rig:
    """A controller on tick k at t = k*dt, with inputs fed by the test."""

    def __init__(
        self,
        worker: FakeWorker | None = None,
        respawn: Callable[[], None] | None = None,
        config: PolicyConfig = CONFIG,
        info: PolicyInfo = INFO,
        **params: object,
    ) -> None:
        self.k = 0
        self.state = np.zeros(config.state_dim)  # what feed() measures by default
        self.sent: list[Command] = []
        self.logs: list[tuple[str, str]] = []
        self.worker = worker or FakeWorker()
        # The merge and timing tests fix every chunk at its observation time; the rule for a
        # chunk landing on a still arm (start_idle_chunks_late) has its own tests.
        params.setdefault("start_idle_chunks_late", False)
        settings = resolve_settings(PolicyNodeParams(checkpoint="/x", **params), config)
        self.ctl = Controller(
            settings,
            info,
            self.worker,
            clock=self.now,
            publish=self.sent.append,
            decode=self._decode,
            log=lambda level, text, throttle: self.logs.append((level, text)),
            respawn=respawn,
        )

    def now(self) -> float:
        return round(self.k * DT, 9)

    @staticmethod
    def _decode(topic: str, raw: object) -> np.ndarray:
        if isinstance(raw, str):
            raise ValueError(f"{topic}: cannot decode {raw!r}")
        return raw  # type: ignore[return-value]

    def feed(self, state: object = None, stamp: float | None = None) -> None:
        t = self.now() if stamp is None else stamp
        self.ctl.offer_image(CAM, IMAGE, t)
        state = self.state if state is None else state
        self.ctl.offer_state(np.asarray(state, dtype=np.float64), t)

    def tick(self, feed: bool = True) -> list[Command]:
        """Advance to the next tick (optionally with fresh inputs); the commands it sent."""
        self.k += 1
        if feed:
            self.feed()
        before = len(self.sent)
        self.ctl.tick(self.now(), self.now(), 0)
        return self.sent[before:]


def ramp(start: float = 0.0, step: float = 0.01) -> np.ndarray:
    """A chunk (16, 3) whose action i is start + step*i on every joint."""
    return np.repeat((start + step * np.arange(16.0))[:, None], 3, axis=1)


def started(rig: Rig) -> Rig:
    """First tick: fresh inputs, empty schedule -> an inference is submitted at t = 0.1."""
    assert rig.tick() == []
    assert [t for _, t in rig.worker.submitted] == [pytest.approx(0.1)]
    return rig


# ------------------------------------------------------------------------------ merge, publish
def test_arriving_chunk_is_merged_and_published_as_a_trajectory() -> None:
    rig = started(Rig())
    rig.worker.deliver(ramp())  # observed at 0.1: actions chunk[1..15] target 0.1 .. 1.5
    (cmd,) = rig.tick()  # now = 0.2: 0.1 has passed
    assert cmd.kind == TRAJECTORY and cmd.stamp == pytest.approx(0.2)
    # points at least half a tick ahead: 0.3 .. 1.5, i.e. chunk[3..15]
    np.testing.assert_allclose(cmd.times, np.arange(1, 14) * DT)
    np.testing.assert_allclose(cmd.positions, ramp()[3:16])
    c = rig.ctl.counters
    assert c["chunks"] == 1 and c["dropped_actions"] == 1 and c["commands"] == 1
    assert rig.tick() == []  # unchanged schedule: nothing republished


def test_late_chunk_drops_the_actions_whose_time_has_passed() -> None:
    rig = started(Rig())
    rig.tick()
    rig.tick()
    rig.tick()  # now = 0.4, still in flight
    rig.worker.deliver(ramp())
    (cmd,) = rig.tick()  # now = 0.5: targets 0.1 .. 0.4 are past
    assert rig.ctl.counters["dropped_actions"] == 4
    np.testing.assert_allclose(cmd.times, np.arange(1, 11) * DT)  # 0.6 .. 1.5
    np.testing.assert_allclose(cmd.positions, ramp()[6:16])
    # a chunk that lands after its whole horizon is dropped entirely and publishes nothing
    for _ in range(12):
        rig.tick()  # .. 1.7
    rig.worker.deliver(ramp(), t_obs=0.1)
    dropped = rig.ctl.counters["dropped_actions"]
    assert rig.tick() == []
    assert rig.ctl.counters["dropped_actions"] == dropped + 15
    assert rig.ctl.overrun and rig.ctl.counters["dry_ticks"] >= 1  # reported, not silent


def test_a_chunk_landing_on_a_still_arm_starts_when_it_lands() -> None:
    # The first chunk (nothing was executing since before its observation): the arm stood
    # still while it was computed, so it runs from its first action on instead of skipping
    # the four whose grid time passed (test_late_chunk_drops_the_actions_whose_time_has_passed
    # with the plain anchor).
    rig = started(Rig(start_idle_chunks_late=True))
    for _ in range(3):
        rig.tick()  # now = 0.4, still in flight
    rig.worker.deliver(ramp())
    (cmd,) = rig.tick()  # now = 0.5: the chunk's first action moves to grid step 0.5
    assert rig.ctl.counters["dropped_actions"] == 0
    assert cmd.stamp == pytest.approx(0.5)
    np.testing.assert_allclose(cmd.times, np.arange(1, 15) * DT)  # 0.6 .. 1.9
    np.testing.assert_allclose(cmd.positions, ramp()[2:16])  # chunk[1] is at 0.5: not sent
    # While that plan executes, the next chunk keeps its observation time: the arm moved
    # during its inference, so the actions whose time passed are dropped.
    while len(rig.worker.submitted) < 2:
        rig.tick()  # the next inference starts when the plan's end comes near
    (_, t_obs) = rig.worker.submitted[-1]
    assert 0.5 < t_obs < 1.2  # within the plan (0.5 .. 1.2)
    for _ in range(2):
        rig.tick()
    now = rig.now()
    rig.worker.deliver(ramp())
    (cmd,) = rig.tick()
    late = round((rig.now() - t_obs) / DT)  # grid steps from the observation to the merge
    assert rig.ctl.counters["dropped_actions"] == late
    assert cmd.stamp == pytest.approx(now + DT)
    # the first point is the action of the first grid step at least half a tick ahead
    assert cmd.positions[0] == pytest.approx(ramp()[1 + late + 1])


def test_a_model_slower_than_the_whole_horizon_is_an_overrun_not_silence() -> None:
    rig = started(Rig())  # observed at 0.1; its horizon ends at 1.5
    for _ in range(16):
        rig.tick()  # .. 1.7
    assert rig.ctl.counters["overruns"] == 0  # nothing has arrived yet: waiting, not late
    rig.worker.deliver(ramp())  # every action is past: none kept, nothing to publish
    assert rig.tick() == []
    assert rig.ctl.counters["overruns"] == 1 and rig.ctl.counters["dry_ticks"] == 1
    state, reason = rig.ctl.state()
    assert state == "active" and reason.startswith("overrun:")


def test_next_inference_starts_when_its_chunk_lands_before_the_schedule_ends() -> None:
    # latency 0.25 s, chunk-mode lead 2 dt: start when now + 0.45 >= end of schedule (0.8)
    rig = started(Rig(FakeWorker(latency=0.25)))
    rig.worker.deliver(ramp())
    rig.tick()  # 0.2: merged, published; 0.2 + 0.45 < 0.8
    rig.tick()  # 0.3: 0.75 < 0.8
    assert len(rig.worker.submitted) == 1
    rig.tick()  # 0.4: 0.85 >= 0.8 -> submit
    assert [t for _, t in rig.worker.submitted] == pytest.approx([0.1, 0.4])
    obs, _ = rig.worker.submitted[-1]
    assert obs[OBS_IMAGES].shape == (1, 2, 1, 3, 8, 8)
    assert obs[OBS_STATE].shape == (1, 2, 3)


def test_stream_mode_without_latency_submits_later_and_sends_one_command_per_tick() -> None:
    rig = started(Rig(FakeWorker(latency=0.25), output_mode="stream"))
    rig.worker.deliver(ramp())
    sent = [rig.tick() for _ in range(3)]  # 0.2, 0.3, 0.4
    assert all(len(s) == 1 and s[0].kind == STREAM for s in sent)
    np.testing.assert_allclose([s[0].positions for s in sent], ramp()[2:5])
    assert len(rig.worker.submitted) == 1  # stream lead 0: start when now + 0.25 >= 0.8
    rig.tick()  # 0.5
    rig.tick()  # 0.6
    assert [t for _, t in rig.worker.submitted] == pytest.approx([0.1, 0.6])


def test_action_lead_places_each_action_at_its_grid_step_plus_the_lead() -> None:
    # Recorded JointTrajectory commands: a_k is where the arm should be at t_k + dt.
    rig = started(Rig(config=CONFIG.replace(action_lead=DT)))
    rig.worker.deliver(ramp())  # grid steps 0.1 .. 1.5 -> targets 0.2 .. 1.6
    (cmd,) = rig.tick()  # now = 0.2: target 0.2 is due now, not ahead: 0.3 .. 1.6
    np.testing.assert_allclose(cmd.times, np.arange(1, 15) * DT)
    np.testing.assert_allclose(cmd.positions, ramp()[2:16])
    # stream commands are sent at their grid step (lead 0): unchanged
    rig = started(Rig(output_mode="stream", config=CONFIG.replace(action_lead=DT)))
    rig.worker.deliver(ramp())
    (cmd,) = rig.tick()
    np.testing.assert_allclose(cmd.positions, ramp()[2])


def test_inpaint_request_freezes_what_runs_during_inference_and_guides_the_overlap() -> None:
    rig = started(Rig(FakeWorker(latency=0.25), blend_mode="inpaint"))
    assert INPAINT_WEIGHTS not in rig.worker.submitted[0][0]  # nothing to continue yet
    rig.worker.deliver(ramp())  # observed at 0.1
    rig.tick()
    rig.tick()
    rig.tick()  # 0.4: the next inference starts, observed at 0.4
    obs, t_obs = rig.worker.submitted[-1]
    assert t_obs == pytest.approx(0.4)
    actions, weights = obs[INPAINT_ACTIONS][0], obs[INPAINT_WEIGHTS][0]
    # new index j is grid step 0.4 + (j - 1) * 0.1, the last chunk's index j + 3
    np.testing.assert_allclose(actions[:13], ramp()[3:16])
    np.testing.assert_allclose(actions[13:], 0.0)
    # lands at 0.4 + 0.25 + 0.1 = 0.75: grid steps 0.3 .. 0.7 (j = 0..4) execute before
    np.testing.assert_allclose(weights[:5], 1.0)
    np.testing.assert_allclose(weights[5:9], np.exp(-0.5 * np.arange(1, 5)), rtol=1e-6)
    np.testing.assert_allclose(weights[9:], 0.0)
    # the merge is a replace
    assert rig.ctl.schedule.mode == "replace"


# ------------------------------------------------------------------------------ safety
def test_commands_are_clamped_to_the_limits_and_the_velocity_limit() -> None:
    rig = started(Rig())
    chunk = np.zeros((16, 3))
    chunk[:, 0] = 5.0  # far beyond the upper limit 1.2
    chunk[:, 1] = np.arange(16) * 0.5  # 5 rad/s: the velocity limit is 2.4/s
    rig.worker.deliver(chunk)
    (cmd,) = rig.tick()
    pos = cmd.positions
    assert np.all(pos[:, 0] <= 1.2 + 1e-12)
    # from the measured 0.0, at most 0.24 per tick: 0.24, 0.48, ... never above 1.2
    np.testing.assert_allclose(pos[:, 1], np.minimum(0.24 * np.arange(1, 14), 1.2))
    np.testing.assert_allclose(pos[:, 2], 0.0)
    counts = rig.ctl.clamp_counts()
    assert counts["position_clamps"] > 0 and counts["velocity_clamps"] > 0
    # per joint: a hit the position limit, b the velocity limit, c neither
    assert counts["position_clamps[a]"] > 0 and counts["velocity_clamps[b]"] > 0
    assert counts["position_clamps[c]"] == counts["velocity_clamps[c]"] == 0
    assert rig.ctl.diagnostics_values()[2]["velocity_clamps[b]"] == counts["velocity_clamps[b]"]


# ------------------------------------------------------------------------------ action groups
GROUPED = PolicyConfig(
    camera_topics=[CAM],
    image_size=(8, 8),
    crop_shape=None,
    # observed in another order than commanded: the gripper first
    joint_names=["g", "a", "b", "c"],
    state_dim=4,
    action_dim=4,
    action_groups=[
        {"name": "arm", "joints": ["a", "b", "c"], "topic": "/arm/joint_trajectory"},
        {
            "name": "gripper",
            "joints": ["g"],
            "topic": "/gripper/commands",
            "type": "Float64MultiArray",
        },
    ],
    dt=DT,
    n_obs_steps=2,
    horizon=16,
    n_action_steps=8,
)
GROUPED_INFO = PolicyInfo("cpu", np.full(4, -1.0), np.full(4, 1.0), 10)


def test_each_group_kind_gets_its_own_command_with_its_joints() -> None:
    rig = Rig(config=GROUPED, info=GROUPED_INFO)
    rig.state = np.array([0.04, 0.0, 0.0, 0.0])  # g, a, b, c
    started(rig)
    chunk = np.zeros((16, 4))  # action order: a, b, c, g
    chunk[:, 0] = np.linspace(0.0, 0.3, 16)
    chunk[:, 3] = 0.01
    rig.worker.deliver(chunk)
    sent = rig.tick()
    kinds = {c.kind: c for c in sent}
    traj, stream = kinds["trajectory"], kinds["stream"]
    assert traj.joints == ("a", "b", "c") and traj.positions.shape[1] == 3
    assert stream.joints == ("g",) and stream.positions.shape == (1,)
    # the rest of the horizon, up to its end
    np.testing.assert_allclose(traj.positions[:, 0], chunk[-len(traj.times) :, 0])
    # the gripper's stream command is the action of this tick (from its measured 0.04 within
    # the velocity limit: the range [-1.2, 1.2] per second, 0.24 per tick)
    np.testing.assert_allclose(stream.positions, [0.01])
    # the next tick: no new trajectory (schedule unchanged), but a stream command again
    (again,) = rig.tick()
    assert again.kind == "stream" and again.joints == ("g",)
    # a stop is an empty trajectory for the trajectory groups only
    rig.ctl.stop(rig.now())
    stop = rig.sent[-1]
    assert stop.is_stop and stop.joints == ("a", "b", "c")


def test_grouped_limits_clamp_each_path_with_its_own_joints() -> None:
    from diffusion_policy_node.runtime.safety import SafetyLimits

    settings = resolve_settings(PolicyNodeParams(checkpoint="/x"), GROUPED)
    limits = SafetyLimits(np.full(4, -1.0), np.array([1.0, 1.0, 1.0, 0.02]), np.full(4, 10.0))
    sent: list[Command] = []
    ctl = Controller(
        settings,
        GROUPED_INFO,
        FakeWorker(),
        clock=lambda: 0.1,
        publish=sent.append,
        decode=lambda topic, raw: raw,
        limits=limits,
    )
    assert ctl.paths["stream"].safety.limits.upper.tolist() == [0.02]
    assert ctl.paths["trajectory"].safety.limits.upper.tolist() == [1.0, 1.0, 1.0]


def test_inpaint_request_has_the_action_width_when_a_joint_is_only_observed() -> None:
    from diffusion_policy_node.runtime.inpaint import inpaint_request

    # x is observed (in the state) but commanded by no group: 5 state, 4 action columns
    config = GROUPED.replace(joint_names=["g", "a", "b", "c", "x"], state_dim=5)
    settings = resolve_settings(PolicyNodeParams(checkpoint="/x", blend_mode="inpaint"), config)
    chunk = np.arange(64.0).reshape(16, 4)
    actions, weights = inpaint_request(settings, (0.1, chunk), now=0.4, t_obs=0.4, latency=0.25)
    assert actions.shape == (1, 16, 4) and weights.shape == (1, 16)
    np.testing.assert_allclose(actions[0, :13], chunk[3:16])
    np.testing.assert_allclose(weights[0, :5], 1.0)


def test_a_chunk_with_nan_is_discarded_and_nothing_is_published() -> None:
    rig = started(Rig())
    chunk = ramp()
    chunk[4, 1] = np.nan
    rig.worker.deliver(chunk)
    assert rig.tick() == []
    assert rig.ctl.counters["nonfinite_chunks"] == 1 and rig.ctl.counters["chunks"] == 0
    assert any("NaN" in text for _, text in rig.logs)


# ------------------------------------------------------------------------------ hold / resume
def test_stale_input_holds_then_fresh_input_resumes() -> None:
    rig = started(Rig())
    rig.worker.deliver(ramp())
    rig.tick()  # 0.2: trajectory out
    rig.tick()  # 0.3: inputs at 0.3
    assert rig.ctl.state() == ("active", "")
    for _ in range(5):  # 0.4 .. 0.8: no inputs; the newest is 0.5 s old at 0.8 (max_obs_age)
        assert rig.tick(feed=False) == []
    (stop,) = rig.tick(feed=False)  # 0.9: 0.6 s old -> hold, the JTC is told to stop
    assert stop.is_stop and stop.positions.shape == (0, 3)
    state, reason = rig.ctl.state()
    assert state == "holding" and "0.600 s old" in reason and "max_obs_age" in reason
    assert rig.ctl.counters["holds"] == 1
    assert len(rig.ctl.schedule) == 0
    for _ in range(3):
        assert rig.tick(feed=False) == []  # holding: nothing, not even a repeated stop
    # the request submitted at 0.6 (inputs not yet too old) finishes during the hold
    assert rig.worker.submitted[-1][1] == pytest.approx(0.6)
    rig.worker.deliver(ramp())
    assert rig.tick() == []  # 1.3, fresh again: resume, the old chunk is discarded
    assert rig.ctl.state() == ("active", "")
    assert rig.ctl.counters["chunks_discarded"] == 1
    assert rig.worker.submitted[-1][1] == pytest.approx(1.3)  # a new one from fresh inputs
    rig.worker.deliver(ramp(0.5))
    (cmd,) = rig.tick()
    assert cmd.kind == TRAJECTORY and cmd.times.size > 0


def test_a_chunk_observed_before_a_hold_is_discarded() -> None:
    rig = started(Rig())  # inference observed at 0.1 in flight
    for _ in range(6):
        rig.tick(feed=False)  # 0.7: inputs 0.6 s old -> hold
    assert rig.ctl.holding
    rig.tick()  # 0.8: resumes; the old request is still "in flight" in the fake
    rig.worker.deliver(ramp(), t_obs=0.1)
    assert rig.tick() == []
    assert rig.ctl.counters["chunks_discarded"] == 1 and rig.ctl.counters["chunks"] == 0


def test_no_inputs_yet_is_a_hold_with_the_missing_inputs_named() -> None:
    rig = Rig()
    assert rig.tick(feed=False) == []
    state, reason = rig.ctl.state()
    assert state == "holding" and "no camera '/cam' image received yet" in reason
    assert "no joint state received yet" in reason
    assert rig.worker.submitted == []


def test_dead_worker_holds_with_its_error() -> None:
    rig = started(Rig())
    rig.worker.alive, rig.worker.last_error = False, RuntimeError("child exited (code -9)")
    assert rig.tick() == []
    state, reason = rig.ctl.state()
    assert state == "holding" and "child exited (code -9)" in reason


# ------------------------------------------------------------------------------ slow inference
def test_overrun_keeps_the_horizon_reports_it_and_starts_the_next_inference_at_once() -> None:
    rig = started(Rig(FakeWorker(latency=0.25)))
    rig.worker.deliver(ramp())
    (first,) = rig.tick()  # 0.2: points 0.3 .. 1.5; the plan ends at 0.8
    rig.tick()
    rig.tick()  # 0.4: the next inference starts (see the trigger test) ... and is slow
    for _ in range(4):  # 0.5 .. 0.8: the plan executes, nothing new to send
        assert rig.tick() == []
        assert rig.ctl.state() == ("active", "")
    assert rig.tick() == []  # 0.9: the plan is used up: overrun, the rest of the horizon runs
    state, reason = rig.ctl.state()
    assert state == "active" and reason.startswith("overrun:") and "rest of the horizon" in reason
    values = rig.ctl.diagnostics_values()[2]
    assert values["overrun"] is True and values["hold_reason"] == ""
    assert rig.tick() == []  # 1.0: still late, counted once
    c = rig.ctl.counters
    assert c["overruns"] == 1 and c["dry_ticks"] == 0  # never without an action
    assert any("overrun" in t and "250 ms" in t for lvl, t in rig.logs if lvl == "warning")
    assert rig.ctl.mirror.sample(1.0) == pytest.approx(ramp()[10])  # grid 1.0: chunk[10]
    rig.worker.deliver(ramp(0.1))  # observed at 0.4: grid 0.4 .. 1.8, plan until 1.1
    (late,) = rig.tick()  # 1.1: what is not past is sent, from 1.2 on
    assert rig.ctl.state() == ("active", "")
    np.testing.assert_allclose(late.times, np.arange(1, 8) * DT)
    np.testing.assert_allclose(late.positions[:, 0], ramp(0.1)[9:16, 0])
    # the plan ends now, so the next inference starts at once
    assert rig.worker.submitted[-1][1] == pytest.approx(1.1)
    for cmd in (first, late):  # never a past action
        assert np.all(cmd.times > 0.5 * DT)


def test_a_model_slower_than_its_horizon_runs_dry_and_it_is_counted() -> None:
    rig = started(Rig(FakeWorker(latency=2.0)))
    rig.worker.deliver(ramp())
    rig.tick()  # 0.2; the horizon ends at 1.5
    for _ in range(14):
        rig.tick()  # .. 1.6: dry from 1.6 on (the last point, 1.5, is held)
    assert rig.ctl.counters["dry_ticks"] == 1 and rig.ctl.counters["overruns"] == 1


def test_hung_inference_is_an_error_holds_and_restarts_the_worker() -> None:
    respawned: list[int] = []
    rig = started(Rig(respawn=lambda: respawned.append(1), inference_timeout=1.0))
    for _ in range(10):  # 0.2 .. 1.1: in flight for 1.0 s, not yet past the timeout
        rig.tick()
    assert rig.ctl.state() == ("active", "") and respawned == []
    rig.tick()  # 1.2: 1.1 s
    state, reason = rig.ctl.state()
    assert state == "holding" and "did not return within 1 s" in reason
    assert respawned == [1]
    assert rig.ctl.counters["inference_timeouts"] == 1
    assert rig.ctl.counters["worker_restarts"] == 1
    assert any("restarting the inference worker" in t for lvl, t in rig.logs if lvl == "error")
    for _ in range(5):
        rig.tick()
    assert respawned == [1]  # one restart, the hold goes on until the new worker is there
    new = FakeWorker()
    rig.ctl.replace_worker(new)
    rig.tick()
    assert rig.ctl.state() == ("active", "")
    assert [t for _, t in new.submitted] == [pytest.approx(rig.now())]


def test_without_a_timeout_a_slow_inference_is_waited_for() -> None:
    rig = started(Rig(inference_timeout=0.0))
    for _ in range(100):
        rig.tick()
    assert rig.ctl.state() == ("active", "") and rig.ctl.counters["inference_timeouts"] == 0


# ------------------------------------------------------------------------------ services
def test_stop_sends_one_stop_and_nothing_until_start() -> None:
    rig = started(Rig())
    rig.worker.deliver(ramp())
    rig.tick()
    assert rig.ctl.stop(rig.now()) == "stopped"
    assert rig.sent[-1].is_stop
    n = len(rig.sent)
    for _ in range(3):
        rig.tick()
    assert len(rig.sent) == n and rig.ctl.state() == ("stopped", "")
    assert rig.ctl.stop(rig.now()) == "already stopped" and len(rig.sent) == n
    assert rig.ctl.start() == "started"
    rig.tick()
    assert rig.worker.busy  # commanding again: a new inference from fresh inputs


def test_start_inactive_waits_for_start() -> None:
    rig = Rig(start_active=False)
    for _ in range(3):
        assert rig.tick() == []
    assert rig.worker.submitted == [] and rig.ctl.state() == ("stopped", "")


def test_reset_discards_in_flight_work_and_resets_the_policy() -> None:
    rig = started(Rig())
    rig.ctl.reset(rig.now())
    assert rig.worker.resets == 1 and rig.ctl.counters["resets"] == 1
    assert not rig.worker.busy
    # the input stamp order restarts too (a simulation restart stamps from 0 again)
    assert rig.ctl.offer_state(np.zeros(3), 0.0)


# ------------------------------------------------------------------------------ inputs, errors
def test_input_stamps_in_the_future_or_out_of_order_are_ignored_and_counted() -> None:
    rig = Rig()
    rig.k = 10  # now = 1.0
    assert rig.ctl.offer_state(np.zeros(3), 0.9)
    assert not rig.ctl.offer_state(np.zeros(3), 0.8)
    assert not rig.ctl.offer_state(np.zeros(3), 1.0 + 0.6)  # more than max_obs_age ahead
    assert rig.ctl.counters["out_of_order"] == 1 and rig.ctl.counters["bad_stamps"] == 1
    texts = [t for _, t in rig.logs]
    assert any("before the newest" in t for t in texts) and any("future" in t for t in texts)


def test_undecodable_image_is_counted_and_the_tick_goes_on() -> None:
    rig = Rig()
    rig.ctl.offer_image(CAM, "garbage", 0.1)
    rig.ctl.offer_state(np.zeros(3), 0.1)
    rig.k = 1
    rig.ctl.tick(0.1, 0.1)
    assert rig.ctl.counters["bad_images"] == 1 and rig.ctl.counters["tick_errors"] == 0
    assert "cannot decode 'garbage'" in rig.logs[0][1]


def test_failed_inference_is_logged_and_retried() -> None:
    rig = started(Rig())
    rig.worker.fail(RuntimeError("CUDA out of memory"))
    assert rig.tick() == []
    assert any("CUDA out of memory" in t for lvl, t in rig.logs if lvl == "error")
    assert len(rig.worker.submitted) == 2  # the schedule is empty: try again at once


def test_an_error_inside_the_tick_is_counted_and_halts() -> None:
    rig = started(Rig())
    rig.worker.deliver(ramp())
    rig.tick()

    def broken() -> None:
        raise RuntimeError("pipe closed")

    rig.worker.poll = broken  # type: ignore[method-assign]
    (stop,) = rig.tick()
    assert stop.is_stop and rig.ctl.counters["tick_errors"] == 1
    assert len(rig.ctl.schedule) == 0


# ------------------------------------------------------------------------------ diagnostics
def test_diagnostics_report_state_counters_timing_and_ages() -> None:
    rig = started(Rig())
    rig.worker.deliver(ramp())
    rig.tick()
    state, reason, values = rig.ctl.diagnostics_values()
    assert (state, reason) == ("active", "")
    assert values["commands"] == 1 and values["chunks"] == 1 and values["ticks"] == 2
    assert values["published_ticks"] == 1 and values["jitter_p50_ms"] == pytest.approx(0.0)
    assert values["obs_age_ms[joint_state]"] == pytest.approx(0.0)
    assert values["device"] == "cpu" and values["output_mode"] == "chunk"
    assert values["precision"] == "fp32" and values["matmul_kernels"] == ""
    # obs-to-command: inputs stamped 0.1, the command left at 0.2
    assert values["obs_to_cmd_p50_ms"] == pytest.approx(100.0)


def test_ensemble_schedules_only_the_plan_and_averages_overlaps() -> None:
    rig = started(Rig(blend_mode="ensemble", ensemble_m=0.0))
    rig.worker.deliver(ramp())  # grid 0.1 .. 0.8 (the plan only)
    (cmd,) = rig.tick()
    np.testing.assert_allclose(cmd.times, np.arange(1, 7) * DT)  # 0.3 .. 0.8
    for _ in range(4):
        rig.tick()  # 0.6: latency unknown (0) + lead 2 dt reaches the plan's end: submit
    assert rig.worker.submitted[-1][1] == pytest.approx(0.6)
    rig.worker.deliver(ramp(0.1))  # grid 0.6 .. 1.3
    (cmd,) = rig.tick()  # 0.7: points 0.8 .. 1.3; 0.8 is the mean of both (m = 0)
    np.testing.assert_allclose(cmd.times, np.arange(1, 7) * DT)
    np.testing.assert_allclose(cmd.positions[0, 0], (ramp()[8, 0] + ramp(0.1)[3, 0]) / 2)
    np.testing.assert_allclose(cmd.positions[1:, 0], ramp(0.1)[4:9, 0])


# ------------------------------------------------------------------------------ joint states
def test_joint_states_from_two_publishers_are_merged_and_the_node_acts() -> None:
    # the arm driver publishes a and b, the gripper driver c: no message carries all three
    rig = Rig()
    for _ in range(3):
        rig.k += 1
        t = rig.now()
        rig.ctl.offer_image(CAM, IMAGE, t)
        assert rig.ctl.offer_joint_state(["b", "a"], [0.2, 0.1], t)
        assert rig.ctl.offer_joint_state(["c"], [0.3], t - 0.05)
        rig.ctl.tick(t, t, 0)
    assert not rig.ctl.holding and rig.worker.submitted
    obs = rig.worker.submitted[-1][0]
    np.testing.assert_allclose(obs[OBS_STATE][-1, -1], [0.1, 0.2, 0.3], atol=1e-6)
    assert rig.ctl.counters["bad_joint_states"] == 0


def test_only_part_of_the_joints_is_a_hold_naming_the_missing_ones() -> None:
    rig = Rig()
    rig.k = 1
    rig.ctl.offer_image(CAM, IMAGE, 0.1)
    rig.ctl.offer_joint_state(["a", "b"], [0.1, 0.2], 0.1)
    rig.ctl.tick(0.1, 0.1, 0)
    state, reason = rig.ctl.state()
    assert state == "holding"
    assert "joint state incomplete: joint(s) ['c'] never received" in reason
    assert "received ['a', 'b']" in reason


def test_a_joint_whose_driver_stopped_makes_the_observation_stale_naming_it() -> None:
    rig = Rig()
    rig.k = 1
    rig.ctl.offer_joint_state(["c"], [0.3], 0.1)
    for _ in range(8):  # c's driver is gone; a and b keep coming
        t = rig.now()
        rig.ctl.offer_image(CAM, IMAGE, t)
        rig.ctl.offer_joint_state(["a", "b"], [0.1, 0.2], t)
        rig.ctl.tick(t, t, 0)
        rig.k += 1
    state, reason = rig.ctl.state()
    assert state == "holding" and "joint state is" in reason
    assert "oldest joint(s): {'c':" in reason


def test_a_duplicate_joint_name_is_skipped_counted_and_warned_once() -> None:
    rig = Rig()
    rig.k = 1
    assert rig.ctl.offer_joint_state(["a", "b", "c"], [0.1, 0.5, 0.3], 0.1)
    for _ in range(3):  # a buggy driver repeats b with 0.0
        assert not rig.ctl.offer_joint_state(["a", "b", "c", "b"], [0.1, 0.5, 0.3, 0.0], 0.1)
    assert rig.ctl.counters["bad_joint_states"] == 3
    warnings = [t for level, t in rig.logs if level == "warning" and "more than once" in t]
    assert len(warnings) == 1 and "['b']" in warnings[0]
    np.testing.assert_allclose(rig.ctl.joints.positions(), [0.1, 0.5, 0.3])  # not 0.0


def test_hold_reason_tells_never_received_from_received_but_rejected() -> None:
    rig = Rig()
    rig.k = 1
    rig.ctl.offer_joint_state(["a", "b", "c", "b"], [0.1, 0.5, 0.3, 0.0], 0.1)
    rig.ctl.reject_input("bad_images", "image rejected: encoding 'bayer_rggb8'", CAM)
    rig.ctl.tick(0.1, 0.1, 0)
    _, reason = rig.ctl.state()
    assert "camera '/cam' image received but rejected: image rejected: encoding" in reason
    assert "joint state received but rejected:" in reason and "['b']" in reason
    assert "no joint state received yet" not in reason
    rig = Rig()
    rig.tick(feed=False)
    assert "no joint state received yet" in rig.ctl.state()[1]


# ------------------------------------------------------------------------------ JTC points
def test_trajectory_points_carry_velocities_continuous_across_chunks() -> None:
    rig = started(Rig())
    rig.worker.deliver(ramp(0.0, 0.05))  # 0.5 rad/s on every joint
    (cmd,) = rig.tick()
    assert cmd.velocities.shape == cmd.accelerations.shape == cmd.positions.shape
    np.testing.assert_allclose(cmd.velocities[-1], 0.0)  # the last point at rest
    np.testing.assert_allclose(cmd.accelerations[-1], 0.0)
    assert cmd.velocities[3, 0] == pytest.approx(0.5, abs=0.05)  # the ramp's speed
    for _ in range(20):  # until the next inference is submitted
        n = len(rig.worker.submitted)
        rig.tick()
        if len(rig.worker.submitted) > n:
            break
    else:
        pytest.fail("no second inference")
    rig.worker.deliver(ramp(0.2, 0.02))
    rig.k += 1
    rig.feed()
    now = rig.now()
    executing = rig.ctl.mirror.sample_state(now)
    before = len(rig.sent)
    rig.ctl.tick(now, now, 0)
    (cmd,) = [c for c in rig.sent[before:] if c.kind == TRAJECTORY]
    replaced = rig.ctl.mirror.sample_state(now)
    for x, y in zip(executing, replaced, strict=True):  # no step in position or velocity
        np.testing.assert_allclose(x, y, atol=1e-12)
    assert abs(executing[1][0]) > 0.1  # it was moving when the chunk landed


def test_positions_only_on_request() -> None:
    rig = started(Rig(trajectory_derivatives="none"))
    rig.worker.deliver(ramp())
    (cmd,) = rig.tick()
    assert cmd.velocities is None and cmd.accelerations is None
    assert rig.ctl.mirror.kind == "positions"
    rig = started(Rig(trajectory_derivatives="velocities"))
    rig.worker.deliver(ramp())
    (cmd,) = rig.tick()
    assert cmd.velocities is not None and cmd.accelerations is None
    with pytest.raises(ValueError, match="trajectory_derivatives"):
        Rig(trajectory_derivatives="jerk")
