"""One time base per bag, clock offsets, and message order (part of the bag reader).

- `choose_time_base`: with `timestamp_source="header"` a bag is timed by header stamps if every
  required topic carries them (a header with a non-zero stamp in its first message). A topic
  whose type has no header (a gripper's Float64MultiArray) is mapped onto the header clock:
  its record time plus the median header-stamp-minus-record-time offset of a stamped topic
  (the recorded commands' if stamped, else the joint states', else the cameras'), measured
  over its first `OFFSET_SAMPLE` messages; the stamped topics keep their stamps, so their
  record-time jitter cannot make repeated or skipped grid steps. A zero stamp (a
  JointTrajectory "start on receipt") has only its record time: then the whole bag is timed by
  record time, with a warning naming the topic, so two clocks are never mixed. If the stamps
  then sit more than `MAX_SAME_CLOCK_S` from the record times they are on another clock (sim
  time recorded against the wall clock?) and the bag is refused: record time would then
  disagree with the stamps' pace. `timestamp_source="record"` times every message by its
  record time.
- `ClockOffsets`: header stamp minus record time per topic (reported in the ingest summary).
- `OrderFilter`: releases each topic's messages in time order with a short delay. A message
  older than the previous one is normally the one dropped; but if the messages it is older than
  lie more than `max_gap` ahead of it (a future-stamped outlier, e.g. one JointState 100 s
  ahead), those are dropped instead, so one bad stamp cannot freeze the stream after it.
"""

from __future__ import annotations

import bisect
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

from .bag_sources import BagReadError
from .config import DataConfig

__all__ = [
    "MAX_SAME_CLOCK_S",
    "ClockOffsets",
    "OrderFilter",
    "SkipCounts",
    "TimeBase",
    "choose_time_base",
    "offset_reference",
    "stamp_ns",
]

MAX_SAME_CLOCK_S = 1.0
OFFSET_SAMPLE = 200  # messages of the reference topic that estimate a header-less topic's offset
ORDER_WINDOW = 8  # messages per topic held back to judge the order


def stamp_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def header_stamp(msg: Any) -> int | None:
    """The message's header stamp in ns (0 if unset), or None if the type has no header."""
    header = getattr(msg, "header", None)
    return None if header is None else stamp_ns(header.stamp)


class SkipCounts:
    """Per-(topic, reason) counters of skipped messages."""

    def __init__(self) -> None:
        self.counter: Counter[tuple[str, str]] = Counter()

    def skip(self, topic: str, reason: str, n: int = 1) -> None:
        self.counter[(topic, reason)] += n

    def by_topic(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for (topic, reason), n in sorted(self.counter.items()):
            out.setdefault(topic, {})[reason] = n
        return out


@dataclass(frozen=True)
class TimeBase:
    source: str  # "header" or "record"
    note: str  # why, in words
    mapped: tuple[str, ...] = ()  # header-less topics timed by record time + offset_ns
    offset_ns: int = 0  # header stamp - record time of the reference topic (median)


def offset_reference(
    firsts: dict[str, tuple[int | None, int]], command_topics: list[str], joint_topic: str
) -> str | None:
    """The stamped topic whose header - record offsets map the header-less topics: a stamped
    command topic (the same publisher as a header-less command, as a rule), else the joint
    states, else a camera; None when no topic is stamped."""
    stamped = [t for t, (stamp, _) in firsts.items() if stamp]
    for topic in [*command_topics, joint_topic]:
        if topic in stamped:
            return topic
    return stamped[0] if stamped else None


class ClockOffsets:
    """Running header-stamp minus record-time statistics per topic (constant memory)."""

    def __init__(self) -> None:
        self.stats: dict[str, list[float]] = {}  # topic -> [n, sum, min, max] in ns

    def add(self, topic: str, offset_ns: int) -> None:
        s = self.stats.get(topic)
        if s is None:
            self.stats[topic] = [1, offset_ns, offset_ns, offset_ns]
        else:
            s[0] += 1
            s[1] += offset_ns
            s[2] = min(s[2], offset_ns)
            s[3] = max(s[3], offset_ns)

    def to_dict(self) -> dict[str, dict[str, float]]:
        """{topic: {"mean_ms", "min_ms", "max_ms"}} of header stamp minus record time."""
        return {
            topic: {
                "mean_ms": round(s[1] / s[0] / 1e6, 3),
                "min_ms": round(s[2] / 1e6, 3),
                "max_ms": round(s[3] / 1e6, 3),
            }
            for topic, s in sorted(self.stats.items())
        }


def choose_time_base(
    config: DataConfig,
    firsts: dict[str, tuple[int | None, int]],
    bag: str,
    offsets: tuple[str, list[int]] | None = None,
) -> TimeBase:
    """Pick the bag's time base from the first message of every required topic.

    firsts: topic -> (header stamp ns, 0 if unset, None if the type has no header; record ns).
    offsets: (reference topic, header - record ns of its first messages), see
    `offset_reference`; without it header-less topics put the bag on record time.
    """
    if config.timestamp_source == "record":
        return TimeBase("record", "timestamp_source: record")
    headerless = sorted(t for t, (stamp, _) in firsts.items() if stamp is None)
    zero = [t for t, (stamp, _) in firsts.items() if stamp == 0]
    if headerless and not zero and offsets is not None and offsets[1]:
        reference, sample = offsets
        offset = int(sorted(sample)[len(sample) // 2])
        if abs(offset) <= MAX_SAME_CLOCK_S * 1e9:
            return TimeBase(
                "header",
                f"{', '.join(headerless)} {'has' if len(headerless) == 1 else 'have'} no "
                f"header: mapped onto the header clock (record time {offset / 1e6:+.1f} ms, "
                f"the median header - record offset of {reference})",
                mapped=tuple(headerless),
                offset_ns=offset,
            )
    unstamped = {
        topic: ("has no header" if stamp is None else "has header.stamp = 0")
        for topic, (stamp, _) in firsts.items()
        if not stamp
    }
    if not unstamped:
        return TimeBase("header", "every required topic carries header stamps")
    offsets = {
        topic: stamp - record for topic, (stamp, record) in firsts.items() if stamp and stamp > 0
    }
    if offsets:
        topic, offset = max(offsets.items(), key=lambda item: abs(item[1]))
        if abs(offset) > MAX_SAME_CLOCK_S * 1e9:
            raise BagReadError(
                f"bag {bag} topic {topic} field header.stamp: stamps differ from the record "
                f"times by {offset / 1e9:.1f} s, but {sorted(unstamped)} have no (or zero) "
                "stamps, so the bag must be timed by record time, and its stamps are on another "
                "clock (sim time vs wall clock?). Set DataConfig.timestamp_source='record' if "
                "the recording ran in real time, or record with `ros2 bag record --use-sim-time`."
            )
    what = "; ".join(f"{t} {why}" for t, why in sorted(unstamped.items()))
    return TimeBase(
        "record",
        f"timestamp_source: header, but {what}: the whole bag is timed by record time "
        "(never mixed); set timestamp_source: record to make this explicit",
    )


class OrderFilter:
    """Releases one topic's (time, item) in non-decreasing time order (see the module doc)."""

    def __init__(self, topic: str, counts: SkipCounts, max_jump_ns: int) -> None:
        self.topic = topic
        self.counts = counts
        self.max_jump_ns = max_jump_ns
        self.pending: deque[tuple[int, Any]] = deque()
        self.times: list[int] = []  # times of `pending`, for bisect
        self.last: int | None = None  # time of the last released item

    def push(self, t: int, item: Any) -> list[tuple[int, Any]]:
        newest = self.times[-1] if self.times else self.last
        if newest is not None and t < newest:
            keep = bisect.bisect_right(self.times, t)
            ahead = len(self.times) - keep
            fits = keep > 0 or self.last is None or self.last <= t
            if ahead and fits and self.times[keep] - t > self.max_jump_ns:
                for _ in range(ahead):
                    self.pending.pop()
                del self.times[keep:]
                self.counts.skip(
                    self.topic,
                    "stamped far ahead of the messages after it (outlier or clock jump)",
                    ahead,
                )
            else:
                self.counts.skip(self.topic, "older than the previous message")
                return []
        self.pending.append((t, item))
        self.times.append(t)
        out = []
        while len(self.pending) > ORDER_WINDOW:
            out.append(self._release())
        return out

    def flush(self) -> list[tuple[int, Any]]:
        return [self._release() for _ in range(len(self.pending))]

    def _release(self) -> tuple[int, Any]:
        t, item = self.pending.popleft()
        del self.times[0]
        self.last = t
        return t, item
