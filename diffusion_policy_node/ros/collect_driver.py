"""The ROS side of `dp-collect`: drive a running sim_node (expert mode) and recorder_node through
their services, one recorded episode at a time. Prints one JSON line per episode on stdout.

    python -m diffusion_policy_node.ros.collect_driver --episodes 5 --seed 100 \\
        --sim dp_collect_sim --recorder dp_collect_recorder

Per episode (docs/episode_protocol.md): `~/pause` (if the robot has it), set the robot's `seed`
parameter (if declared), `~/reset` (nothing moves until `~/unpause`), the expert's process
(`--expert-cmd`, if given), recorder `~/start` (retried until every topic has a publisher, the
expert's command topics included) and until the recorder is connected to a publisher of each
topic (what an expert sends before that is lost), robot `~/unpause`, poll robot `~/report` until
`done`, stop the expert's process (SIGINT, then SIGTERM), `~/pause` (if it has one), wait until
the recorder's message counts stop changing (the last messages are in flight; at most
SETTLE_MAX_S, as a robot's sensors publish on), recorder `~/stop`.
`eval/collect.py` starts the processes and decides which bags to keep.

`--expert-cmd` is a shell-like command line (no shell) run once per episode: `{seed}` and
`{episode}` in it are replaced, and its environment has DP_SEED, DP_EPISODE and DP_ROBOT (the
robot node's name); its output goes to `<--log-dir>/expert_NNNN.log`. It is the user's scripted
expert or teleoperation bridge: it publishes on the robot's command topics, which the recorder
records.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rclpy.executors import Executor
from rclpy.node import Node
from std_srvs.srv import Trigger

from diffusion_policy_node.eval.media import failure_reason
from diffusion_policy_node.ros.service_driver import (
    DriverError,
    ServiceDriver,
    driver_parser,
    run_driver_node,
)

SETTLE_S = 0.15
SETTLE_MAX_S = 1.0
PAUSE_PROBE_S = 1.0  # once the robot answered, its other services are discovered
EXPERT_SETTLE_S = 0.5  # after the recorder connected to it: the expert's other connections
EXPERT_STOP_S = 5.0  # after SIGINT, then SIGTERM, then SIGKILL


def expert_argv(cmd: str, seed: int, episode: int) -> list[str]:
    """The expert's argv for one episode: `{seed}` / `{episode}` replaced, split like a shell."""
    argv = shlex.split(cmd.replace("{seed}", str(seed)).replace("{episode}", str(episode)))
    if not argv:
        raise DriverError(f"--expert-cmd {cmd!r}: empty command")
    return argv


def stop_process(proc: subprocess.Popen, wait_s: float = EXPERT_STOP_S) -> int:
    """SIGINT (a ROS node's Ctrl-C), then SIGTERM, then SIGKILL; the exit code."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        if proc.poll() is not None:
            break
        proc.send_signal(sig)
        try:
            return proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
    if proc.poll() is None:
        proc.kill()
    return proc.wait()


class Driver(ServiceDriver):
    """Drives one robot (or sim) node, one recorder node and optionally the expert's process."""

    def __init__(
        self,
        node: Node,
        executor: Executor,
        sim: str,
        recorder: str,
        timeout: float,
        expert_cmd: str = "",
        log_dir: Path | None = None,
    ) -> None:
        super().__init__(node, timeout, executor)
        self.sim = sim.strip("/")
        self.recorder = recorder.strip("/")
        self.expert_cmd = expert_cmd
        self.log_dir = log_dir
        self._has_seed: bool | None = None
        self._has_pause: bool | None = None

    def start_recording(self) -> dict[str, Any]:
        """~/start, retried while the recorder still waits for publishers to appear."""
        deadline = time.monotonic() + self.timeout
        while True:
            ok, message = self.trigger(f"/{self.recorder}/start", must_succeed=False)
            if ok:
                return json.loads(message)
            if "no publisher seen yet" not in message or time.monotonic() > deadline:
                raise DriverError(f"/{self.recorder}/start refused: {message}")
            time.sleep(0.2)

    def wait_settled(self) -> None:
        """Until the recorder's message counts are the same in two polls SETTLE_S apart (the
        last messages in flight are written), or SETTLE_MAX_S: a robot's sensors may publish
        on after the episode (a paused sim publishes nothing)."""
        deadline = time.monotonic() + SETTLE_MAX_S
        last = None
        while time.monotonic() < deadline:
            counts = self.trigger_json(f"/{self.recorder}/status")["messages"]
            if counts == last:
                return
            last = counts
            time.sleep(SETTLE_S)

    def wait_connected(self, expert: subprocess.Popen) -> None:
        """Until every recorded topic has a publisher connected to the recorder (the expert's
        new publishers take a moment to connect after they appear on the graph; what they
        send before is lost), then EXPERT_SETTLE_S for its other connections (the robot)."""
        deadline = time.monotonic() + self.timeout
        while True:
            matched = self.trigger_json(f"/{self.recorder}/status").get("matched", {})
            waiting = sorted(t for t, n in matched.items() if n < 1)
            if not waiting:
                break
            if expert.poll() is not None:
                raise DriverError(f"the expert's process exited ({expert.returncode}) early")
            if time.monotonic() > deadline:
                raise DriverError(
                    f"/{self.recorder}: no publisher connected on {waiting} within "
                    f"{self.timeout} s of starting the expert"
                )
            time.sleep(0.05)
        time.sleep(EXPERT_SETTLE_S)

    def start_expert(self, index: int, seed: int) -> subprocess.Popen | None:
        if not self.expert_cmd:
            return None
        argv = expert_argv(self.expert_cmd, seed, index)
        env = {**os.environ, "DP_SEED": str(seed), "DP_EPISODE": str(index), "DP_ROBOT": self.sim}
        log = subprocess.DEVNULL
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log = open(self.log_dir / f"expert_{index:04d}.log", "w")  # noqa: SIM115
        try:
            return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        except OSError as exc:
            raise DriverError(f"--expert-cmd {argv}: cannot start ({exc})") from exc
        finally:
            if log is not subprocess.DEVNULL:
                log.close()

    def episode(self, index: int, seed: int, episode_timeout: float) -> dict[str, Any]:
        if self._has_pause is None:
            self._has_seed = self.has_parameter(self.sim, "seed")  # waits for the robot
            self._has_pause = self._client(Trigger, f"/{self.sim}/pause").wait_for_service(
                timeout_sec=PAUSE_PROBE_S
            )
        if self._has_pause:
            self.trigger(f"/{self.sim}/pause")
        if self._has_seed:
            self.set_parameter(self.sim, "seed", int(seed))
        reset_text = self.trigger(f"/{self.sim}/reset")[1]
        reset = json.loads(reset_text) if reset_text.startswith("{") else {}
        expert = self.start_expert(index, seed)  # before ~/start: its topics must exist
        t0 = time.monotonic()
        try:
            bag = self.start_recording()
            if expert is not None:
                self.wait_connected(expert)
            self.trigger(f"/{self.sim}/unpause")
            report = self.wait_episode_done(self.sim, episode_timeout)
        finally:
            expert_rc = None if expert is None else stop_process(expert)
        if self._has_pause:
            self.trigger(f"/{self.sim}/pause")  # nothing moves (or publishes) until the next
        self.wait_settled()
        stopped = self.trigger_json(f"/{self.recorder}/stop")
        return {
            "episode": index,
            "seed": seed if self._has_seed else reset.get("episode_seed"),
            "side": reset.get("side"),
            "success": bool(report["success"]),
            "collided": bool(report.get("collided", False)),
            "failure_reason": failure_reason(report),
            "time": report.get("time", round(time.monotonic() - t0, 3)),
            "real_time_factor": report.get("real_time_factor"),
            "bag": bag["bag"],
            "messages": stopped["messages"],
            "expert_rc": expert_rc,
        }


def main(argv: list[str] | None = None) -> int:
    parser = driver_parser("collect_driver", __doc__.splitlines()[0], seed=0)
    parser.add_argument("--recorder", default="recorder_node", help="recorder node name")
    parser.add_argument("--expert-cmd", default="", help="expert process per episode (see above)")
    parser.add_argument("--log-dir", default="", help="folder for the expert's logs")
    args, ros_args = parser.parse_known_args(argv)

    def episodes(node: Node, executor: Executor) -> Iterator[dict[str, Any]]:
        log_dir = Path(args.log_dir) if args.log_dir else None
        driver = Driver(
            node, executor, args.sim, args.recorder, args.timeout, args.expert_cmd, log_dir
        )
        for i in range(args.episodes):
            yield driver.episode(i, args.seed + i, args.episode_timeout)

    return run_driver_node("dp_collect_driver", ros_args, episodes)


if __name__ == "__main__":
    sys.exit(main())
