"""`sim.SimEngine` without ROS: what it publishes and when (simulation time), how it follows
trajectory / stream commands, expert episodes, resets, and `run()`'s real-time pacing and
pausing under an injected wall clock (no sleeps)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from diffusion_policy_node.eval.smoothness import recorded_smoothness
from diffusion_policy_node.sim.arm_task import HOME_QPOS, JOINT_NAMES, ArmTaskConfig
from diffusion_policy_node.sim.engine import (
    NS,
    START_TIME_NS,
    SimEngine,
    SimSettings,
    configs_from_parameters,
)

PHYSICS_NS = 2_000_000  # ArmTaskConfig's default physics_dt, 2 ms
SMALL = {"image_width": 32, "image_height": 24}


class Sink(dict):
    """The engine's sink callbacks, recording every call per key."""

    def __init__(self) -> None:
        self.calls: dict[str, list[tuple]] = {}
        for key in ("joint_state", "image", "clock", "trajectory", "stream", "log"):
            self[key] = self._recorder(key)

    def _recorder(self, key: str) -> Callable[..., None]:
        def record(*args) -> None:
            self.calls.setdefault(key, []).append(args)

        return record

    def stamps(self, key: str) -> list[int]:
        return [args[0] for args in self.calls.get(key, [])]


class FakeClock:
    """Wall time that moves only when the engine waits (see FakeStop)."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class FakeStop(threading.Event):
    """`run()`'s stop event: `wait(s)` advances the fake clock instead of sleeping, and runs
    `hook(t)` (which may stop the run or submit requests)."""

    def __init__(self, clock: FakeClock, hook: Callable[[float], None]) -> None:
        super().__init__()
        self.clock, self.hook = clock, hook

    def wait(self, timeout: float | None = None) -> bool:
        self.clock.t += timeout or 0.0
        self.hook(self.clock.t)
        return self.is_set()


@pytest.fixture
def make_engine() -> Iterator[Callable[..., tuple[SimEngine, Sink]]]:
    engines: list[SimEngine] = []

    def make(
        task: dict | None = None, clock: Callable[[], float] | None = None, seed: int = 0, **kw
    ) -> tuple[SimEngine, Sink]:
        sink = Sink()
        settings = SimSettings(**{"real_time_factor": 0.0, **kw})
        extra = {} if clock is None else {"clock": clock}
        engine = SimEngine(
            ArmTaskConfig(**{**SMALL, **(task or {})}), settings, sink, seed, **extra
        )
        engines.append(engine)
        return engine, sink

    yield make
    for engine in engines:
        engine.close()


def ticks(engine: SimEngine, seconds: float) -> None:
    for _ in range(round(seconds * NS / engine.physics_ns)):
        engine.tick()


def test_initial_state_is_published_at_the_episode_start(make_engine) -> None:
    engine, sink = make_engine(seed=7)
    report = engine.report()
    assert report["episode_seed"] == 7 and report["episodes"] == 1
    assert report["sim_time"] == START_TIME_NS / NS and report["time"] == 0.0
    assert not (report["done"] or report["paused"] or report["success"])
    assert sink.calls == {}  # nothing before the first tick
    engine.tick()
    for key in ("joint_state", "image", "clock"):
        assert sink.stamps(key) == [START_TIME_NS], key
    _, names, positions, velocities = sink.calls["joint_state"][0]
    assert names == list(JOINT_NAMES)
    np.testing.assert_allclose(positions, HOME_QPOS, atol=1e-12)
    assert velocities.shape == (3,)
    (_, rgb) = sink.calls["image"][0]
    assert rgb.shape == (24, 32, 3) and rgb.dtype == np.uint8
    assert engine.now_ns == START_TIME_NS + PHYSICS_NS


def test_streams_are_published_on_their_own_simulation_time_grid(make_engine) -> None:
    engine, sink = make_engine(camera_rate_hz=30.0, joint_state_rate_hz=100.0, clock_rate_hz=200.0)
    ticks(engine, 1.0)
    joint = np.diff(sink.stamps("joint_state"))
    assert len(joint) == 99 and np.all(joint == 10_000_000)
    # 1/30 s and 5 ms are no multiples of the 2 ms physics step: each publication lands on the
    # first step at or after its due time, and the schedule does not drift.
    for key, rate, count in (("image", 30, 30), ("clock", 200, 200)):
        stamps = np.array(sink.stamps(key))
        assert len(stamps) == count, key
        due = START_TIME_NS + np.arange(count) * round(NS / rate)
        assert np.all((stamps >= due) & (stamps - due < PHYSICS_NS)), key
        assert np.all((stamps - START_TIME_NS) % PHYSICS_NS == 0), key


def test_trajectory_is_interpolated_in_simulation_time(make_engine) -> None:
    engine, sink = make_engine()
    goal = HOME_QPOS + np.array([0.2, -0.1, 0.1])
    engine.submit("trajectory", ([0.2], goal[None, :], None))  # start on receipt
    engine.handle_requests()
    t0 = engine.now_ns
    ticks(engine, 0.1)
    # The last servo target was sampled at t0 + 49 steps: 49/100 of the way to the goal.
    fraction = (engine.now_ns - PHYSICS_NS - t0) / (0.2 * NS)
    np.testing.assert_allclose(
        engine.task.joint_targets(), HOME_QPOS + fraction * (goal - HOME_QPOS), atol=1e-9
    )
    ticks(engine, 1.0)
    np.testing.assert_allclose(engine.task.joint_targets(), goal, atol=1e-12)  # held at the end
    assert np.max(np.abs(sink.calls["joint_state"][-1][2] - goal)) < 5e-3  # the arm got there
    assert engine.report()["max_joint_excursion"] > 0.15
    assert engine.report()["trajectories"] == 0  # no header stamp: no command delay measured


def test_stamped_trajectory_records_the_command_delay(make_engine) -> None:
    engine, _ = make_engine()
    ticks(engine, 0.2)
    sent = engine.now_ns / NS - 0.05  # the sender stamped it 50 ms of simulation time ago
    engine.submit("trajectory", ([0.5], HOME_QPOS[None, :], sent))
    engine.handle_requests()
    ticks(engine, 0.1)  # the report snapshot is refreshed every 25 steps
    report = engine.report()
    assert report["trajectories"] == 1
    assert report["command_delay_p50_ms"] == pytest.approx(50.0)
    assert report["command_delay_max_ms"] == pytest.approx(50.0)


def test_stream_command_replaces_the_trajectory_at_once(make_engine) -> None:
    engine, _ = make_engine()
    engine.submit("trajectory", ([1.0], (HOME_QPOS + 0.3)[None, :], None))
    engine.handle_requests()
    ticks(engine, 0.1)
    target = HOME_QPOS + np.array([-0.2, 0.1, -0.15])
    engine.submit("stream", target)
    engine.handle_requests()
    engine.tick()
    np.testing.assert_allclose(engine.task.joint_targets(), target, atol=1e-12)
    assert not engine.follower.has_trajectory


def test_reset_starts_a_new_episode_at_home(make_engine) -> None:
    engine, sink = make_engine(seed=3)
    engine.submit("stream", HOME_QPOS + 0.2)
    engine.handle_requests()
    ticks(engine, 0.3)
    result: dict = {}
    requester = threading.Thread(target=lambda: result.update(engine.submit("reset", 5, wait=30)))
    requester.start()
    while requester.is_alive():  # this thread is the sim thread: it applies the request
        engine.handle_requests()
        requester.join(0.001)
    now = engine.now_ns
    assert result == {"episode_seed": 5, "episode_start": now / NS, "side": None}
    report = engine.report()
    assert (report["episode_seed"], report["episodes"], report["time"]) == (5, 2, 0.0)
    engine.tick()
    assert sink.stamps("joint_state")[-1] == now  # the new episode's initial state
    np.testing.assert_allclose(sink.calls["joint_state"][-1][2], HOME_QPOS, atol=1e-12)
    np.testing.assert_allclose(engine.task.joint_targets(), HOME_QPOS, atol=1e-12)


def test_bad_requests_are_reported_to_the_caller(make_engine) -> None:
    engine, _ = make_engine()
    errors: list[BaseException] = []

    def bad_trajectory() -> None:
        try:  # time_from_start not increasing: the follower rejects it
            engine.submit("trajectory", ([0.2, 0.1], np.zeros((2, 3)), None), wait=30)
        except ValueError as exc:
            errors.append(exc)

    requester = threading.Thread(target=bad_trajectory)
    requester.start()
    while requester.is_alive():
        engine.handle_requests()
        requester.join(0.001)
    assert len(errors) == 1 and "strictly increasing" in str(errors[0])
    with pytest.raises(TimeoutError, match="did not handle 'pause'"):
        engine.submit("pause", wait=0.0)  # nobody runs the sim thread here


@pytest.mark.parametrize("output", ["trajectory", "stream"])
def test_expert_episode_publishes_its_commands_and_pauses_when_done(
    make_engine, output: str
) -> None:
    engine, sink = make_engine(
        task={"time_limit": 1.0}, expert=True, expert_output=output, pause_on_done=True
    )
    assert engine.report()["side"] in ("left", "right")
    engine.submit("stream", HOME_QPOS + 0.3)  # external commands are ignored in expert mode
    engine.handle_requests()
    assert sink.calls["log"] == [("warn", "expert mode: ignoring an external stream command")]
    while not engine.paused:
        engine.tick()
        assert engine.now_ns < START_TIME_NS + 2 * NS, "the episode did not end"
    report = engine.report()
    assert report["done"] and report["paused"] and report["time"] == pytest.approx(1.0)
    commands = sink.calls[output]
    # One command every control_dt (0.1 s) from the episode start, none after the end.
    assert [c[0] for c in commands] == [START_TIME_NS + k * NS // 10 for k in range(10)]
    if output == "trajectory":
        _, names, tfs, positions = commands[0]
        assert names == list(JOINT_NAMES) and tfs.tolist() == [0.1] and positions.shape == (1, 3)
    else:
        assert commands[0][1].shape == (3,)
    # The terminal observation is published at the step that ended the episode.
    end = engine.now_ns
    assert sink.stamps("joint_state")[-1] == end and sink.stamps("image")[-1] == end
    steps = engine.steps
    engine.tick()  # tick() itself does not look at `paused`; run() does
    assert engine.steps == steps + 1


def test_report_time_stops_when_the_episode_ends(make_engine) -> None:
    engine, _ = make_engine(task={"time_limit": 0.5})
    ticks(engine, 0.3)
    engine._update_snapshot()
    assert engine.report()["time"] == pytest.approx(0.3, abs=0.01)
    while not engine.task.done:
        engine.tick()
        assert engine.now_ns < START_TIME_NS + 2 * NS, "the episode did not end"
    ticks(engine, 1.0)  # the sim runs on (no pause_on_done)
    engine._update_snapshot()
    report = engine.report()
    assert report["done"] and report["time"] == pytest.approx(0.5, abs=0.01)
    assert report["sim_time"] > START_TIME_NS / NS + 1.4
    engine.submit("reset", 1)
    engine.handle_requests()
    assert engine.report()["time"] == 0.0


@pytest.mark.parametrize("rtf", [1.0, 4.0])
def test_run_keeps_simulation_time_at_real_time_factor_x_wall_time(make_engine, rtf) -> None:
    clock = FakeClock()
    engine, sink = make_engine(clock=clock, real_time_factor=rtf)
    stop = FakeStop(clock, lambda t: None)
    sink["clock"] = lambda ns: stop.set() if ns >= START_TIME_NS + NS // 2 else None
    engine.run(stop)
    sim_elapsed = (engine.now_ns - START_TIME_NS) / NS
    assert sim_elapsed == pytest.approx(0.5, abs=0.006)
    assert clock.t == pytest.approx(sim_elapsed / rtf, abs=0.003)
    assert engine.report()["real_time_factor"] == pytest.approx(rtf, rel=0.05)


def test_run_as_fast_as_possible_never_waits(make_engine) -> None:
    clock = FakeClock()
    engine, sink = make_engine(clock=clock, real_time_factor=0.0)
    stop = FakeStop(clock, lambda t: None)
    sink["clock"] = lambda ns: stop.set() if ns >= START_TIME_NS + NS // 5 else None
    engine.run(stop)
    assert clock.t == 0.0 and engine.now_ns >= START_TIME_NS + NS // 5


def test_paused_run_republishes_the_clock_and_resumes_without_catch_up(make_engine) -> None:
    clock = FakeClock()
    engine, sink = make_engine(clock=clock, real_time_factor=1.0, start_paused=True)

    def hook(t: float) -> None:
        if t >= 0.35 and engine.paused and not unpaused:
            unpaused.append(t)
            engine.submit("unpause")
        if t >= 0.55:
            stop.set()

    unpaused: list[float] = []
    stop = FakeStop(clock, hook)
    engine.run(stop)
    clock_stamps = sink.stamps("clock")
    # Paused for 0.35 s wall: /clock every 0.1 s wall, unchanged; no physics step.
    assert clock_stamps[:4] == [START_TIME_NS] * 4
    assert clock_stamps[4] == START_TIME_NS  # the first tick after unpausing
    assert sink.stamps("joint_state")[0] == START_TIME_NS
    # About 0.2 s of wall time ran unpaused: the paused 0.35 s is not caught up.
    assert (engine.now_ns - START_TIME_NS) / NS == pytest.approx(0.55 - unpaused[0], abs=0.006)
    assert not engine.report()["paused"]


@pytest.mark.parametrize(
    "field, value",
    [
        ("camera_rate_hz", 0.0),
        ("joint_state_rate_hz", float("inf")),
        ("real_time_factor", -2.0),
        ("qos_depth", 0),
        ("expert_output", "poses"),
    ],
)
def test_settings_reject_bad_values(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"parameter {field}="):
        SimSettings(**{field: value})


PARAMETERS = {
    "seed": 4,
    "real_time_factor": 2.0,
    "joint_state_rate_hz": 50.0,
    "camera_rate_hz": 10.0,
    "clock_rate_hz": 100.0,
    "image_width": 64,
    "image_height": 48,
    "physics_dt": 0.002,
    "control_dt": 0.1,
    "time_limit": 5.0,
    "expert": True,
    "expert_output": "stream",
    "pause_on_done": True,
    "start_paused": False,
    "frame_id": "cam",
    "qos_depth": 100,
}


def test_configs_from_parameters() -> None:
    settings, task = configs_from_parameters(PARAMETERS)
    assert settings == SimSettings(
        joint_state_rate_hz=50.0,
        camera_rate_hz=10.0,
        clock_rate_hz=100.0,
        real_time_factor=2.0,
        expert=True,
        expert_output="stream",
        pause_on_done=True,
        frame_id="cam",
        qos_depth=100,
    )
    assert (task.image_width, task.image_height, task.time_limit, task.seed) == (64, 48, 5.0, 4)
    with pytest.raises(ValueError, match=r"control_dt.*parameter of the same name"):
        configs_from_parameters({**PARAMETERS, "control_dt": 0.105})


def test_motion_is_recorded_with_chunk_boundaries_only_where_a_plan_is_replaced(
    make_engine,
) -> None:
    engine, _ = make_engine()
    goal = HOME_QPOS + np.array([0.3, 0.0, 0.0])
    engine.submit("trajectory", ([0.5, 1.0], np.stack([goal, goal]), None))  # from rest
    engine.handle_requests()
    ticks(engine, 0.3)
    engine.submit("trajectory", ([0.5], HOME_QPOS[None, :], None))  # replaces a running plan
    engine.handle_requests()
    ticks(engine, 1.5)  # the second plan ends at 0.8 s; a new one after that starts from rest
    engine.submit("trajectory", ([0.5], goal[None, :], None))
    engine.handle_requests()
    ticks(engine, 0.5)
    report = recorded_smoothness(engine.motion)
    assert report["chunk_boundaries"] == 1
    assert report["motion_samples"] >= 20  # one per control step (0.1 s)
    assert report["jerk_boundary_mean"] > report["jerk_within_mean"] > 0
