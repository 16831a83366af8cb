"""Shared pieces of the side-by-side benchmarks: the CPU model, the peer's interpreter, and
children that time one thing per request so that two implementations can be interleaved.

A `Child` is a benchmark process (ours, or the peer in its own venv) that reads one JSON request
per line on stdin and answers one JSON line on stdout. The parent sends "run" requests to the
children in turn (never concurrently), so both see the same machine load over the same minutes:
on a shared 2-core machine a ratio of figures taken minutes apart says more about the other
workers than about the code.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PEER_VENV = Path(os.environ.get("DP_PEER_VENV", REPO / ".venv-peer"))
PEER_SCRIPT = REPO / "bench" / "peer_lerobot.py"
PEER_MISSING = "peer not measured"


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), e.g. 'Intel(R) Xeon(R) Processor'."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def machine_line() -> dict[str, Any]:
    """What every bench prints first: CPU model, cores, ISA flags that matter, load."""
    flags = cpu_flags()
    return {
        "bench": "machine",
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "avx512_bf16": "avx512_bf16" in flags,
        "amx_bf16": "amx_bf16" in flags,
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "python": platform.python_version(),
    }


def peer_python() -> Path | None:
    """The peer venv's interpreter (make bench-peer), or None when it is not set up."""
    exe = PEER_VENV / "bin" / "python"
    return exe if exe.is_file() and os.access(exe, os.X_OK) else None


def peak_rss_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary_ms(times_s: Sequence[float]) -> dict[str, float]:
    return {
        "p50_ms": round(statistics.median(times_s) * 1e3, 2),
        "p90_ms": round(percentile(times_s, 0.9) * 1e3, 2),
        "p99_ms": round(percentile(times_s, 0.99) * 1e3, 2),
        "reps": len(times_s),
    }


class Child:
    """A benchmark process answering one JSON line per JSON request line (see `serve`)."""

    def __init__(
        self, name: str, cmd: list[str], env: dict[str, str | None] | None = None
    ) -> None:
        """`env`: variables set (or, with value None, removed) for the child."""
        self.name = name
        environ = {**os.environ, **(env or {})}
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={k: v for k, v in environ.items() if v is not None},
        )
        self.info = self._read()  # the child's first line: what it built

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.name}: benchmark child exited ({self.proc.wait()})")
            line = line.strip()
            if line.startswith("{"):
                reply = json.loads(line)
                if "error" in reply:
                    raise RuntimeError(f"{self.name}: {reply['error']}")
                return reply

    def request(self, **msg: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> dict[str, Any]:
        """Ask for the final figures (peak RSS) and end the child."""
        try:
            final = self.request(op="quit")
        finally:
            if self.proc.stdin:
                self.proc.stdin.close()
            self.proc.wait(timeout=60)
        return final


def serve(info: dict[str, Any], handlers: dict[str, Callable[..., dict[str, Any]]]) -> None:
    """Child side of `Child`: print `info`, then answer requests {"op": name, ...} with
    `handlers[name](**rest)` until "quit" (answered with the peak RSS) or EOF. Anything the
    libraries print goes to stderr, so stdout carries only the protocol."""
    out = sys.stdout
    sys.stdout = sys.stderr
    out.write(json.dumps(info) + "\n")
    out.flush()
    for line in sys.stdin:
        msg = json.loads(line)
        op = msg.pop("op")
        if op == "quit":
            out.write(json.dumps({"peak_rss_mib": peak_rss_mib()}) + "\n")
            out.flush()
            return
        try:
            reply = handlers[op](**msg)
        except Exception as exc:  # report, let the parent decide
            reply = {"error": f"{op}: {type(exc).__name__}: {exc}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()


def interleave(
    children: Sequence[Child], reps: int, settle_s: float = 0.0, **msg: Any
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """`reps` rounds; each round asks every child for one timed repetition, in turn, with the
    order rotated per round, and `settle_s` of idle time before each request. Returns (wall
    seconds, process CPU seconds) per child name.

    Why settle: after a request the child's OpenMP worker threads keep spinning for a while
    (libgomp's default wait policy; ~9 ms of CPU measured on a 2-core EPYC), so a request sent
    at once shares the cores with the previous child's spin, a cost neither implementation has
    when it runs alone, as on a robot."""
    times: dict[str, list[float]] = {c.name: [] for c in children}
    cpu: dict[str, list[float]] = {c.name: [] for c in children}
    for r in range(reps):
        k = r % len(children)
        for child in (*children[k:], *children[:k]):
            time.sleep(settle_s)
            reply = child.request(op="run", n=1, **msg)
            times[child.name].extend(reply["times"])
            cpu[child.name].extend(reply.get("cpu", []))
    return times, cpu


class Neighbours:
    """`n` CPU-bound processes (a busy Python loop each, normal priority): the other work of a
    busy robot computer (camera drivers, ros2_control, a recorder) at its worst, for as long
    as the `with` block runs."""

    def __init__(self, n: int) -> None:
        if n < 0:
            raise ValueError(f"neighbours: expected n >= 0, got {n}")
        self.n = n
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> Neighbours:
        for _ in range(self.n):
            self.procs.append(subprocess.Popen([sys.executable, "-c", "while True: pass"]))
        time.sleep(0.5 if self.n else 0.0)  # let the scheduler see them
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            proc.kill()
        for proc in self.procs:
            proc.wait()
        self.procs.clear()


def busy_levels(text: str) -> list[int]:
    """--busy: "N" -> [0, N] (idle and N neighbours in one run), "a,b,..." -> those levels."""
    try:
        levels = [int(x) for x in text.split(",")]
    except ValueError:
        raise ValueError(f"--busy {text!r}: expected N or a comma list of ints") from None
    if any(n < 0 for n in levels):
        raise ValueError(f"--busy {text!r}: neighbour counts must be >= 0")
    if len(levels) == 1 and levels[0] > 0:
        levels = [0, levels[0]]
    return levels


# ------------------------------------------------------------------ receiver-side timing
def grid_lateness(events: np.ndarray, dt: float) -> tuple[np.ndarray, int]:
    """(lateness s of each event behind one fixed grid of period dt, missed grid slots).

    Events (sorted seconds) are assigned to the nearest slot of a grid through the first event;
    the grid is then shifted so that the earliest event (relative to its slot) is on time.
    Events sharing a slot count once (the first); slots between the first and last event
    without an event are missed.
    """
    if events.size == 0:
        return events, 0
    k = np.round((events - events[0]) / dt).astype(np.int64)
    offset = events - events[0] - k * dt
    lateness = offset - offset.min()
    _, first = np.unique(k, return_index=True)
    missed = int(k.max() - k.min() + 1 - first.size)
    return lateness[np.sort(first)], missed


def executed_point_times(messages: list[tuple[float, np.ndarray]]) -> np.ndarray:
    """When the executed point changes, for trajectories [(arrival s, absolute point times s)]
    executed with replacement semantics (a message replaces the plan from its arrival on)."""
    out: list[float] = []
    for i, (arrival, times) in enumerate(messages):
        until = messages[i + 1][0] if i + 1 < len(messages) else np.inf
        # Points already due at arrival are not executed from this message (the previous plan
        # served those slots, or nothing did: a missed tick).
        out += [float(t) for t in times[(times > arrival) & (times < until)]]
    return np.array(sorted(out))
