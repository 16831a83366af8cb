"""The ingest summary in words: one line per bag (printed by dp-train, logged by the cache)."""

from __future__ import annotations

from typing import Any

__all__ = ["format_ingest"]


def format_ingest(ingest: list[dict[str, Any]]) -> list[str]:
    """One line per bag summary (`scan_bag`'s `summary`): steps, time base, clock offsets,
    skipped messages by reason, skipped episodes, gaps, chunk CRCs."""
    return [_bag_line(bag) for bag in ingest]


def _bag_line(bag: dict[str, Any]) -> str:
    if "format" in bag:  # a LeRobotDataset folder (data/lerobot_dataset.py)
        line = (
            f"{bag['bag']} ({bag['format']}): {bag['episodes']} episode(s), {bag['steps']} steps"
        )
        skipped = "; ".join(f"{s['source']}: {s['reason']}" for s in bag["skipped_episodes"])
        return line + (f" | skipped episodes: {skipped}" if skipped else "")
    offsets = ", ".join(
        f"{topic} {o['mean_ms']:+.1f} ms" for topic, o in bag["clock_offsets_ms"].items()
    )
    base = f"time base {bag['time_base']}"
    if bag.get("mapped_topics") or (
        bag["time_base"] == "record" and bag["time_base_note"] != "timestamp_source: record"
    ):
        base += f" ({bag['time_base_note']})"
    skipped = [
        f"{topic}: {n} {reason}"
        for topic, reasons in bag["skipped_messages"].items()
        for reason, n in reasons.items()
    ]
    parts = [
        f"{bag['bag']}: {bag['episodes']} episode(s), {bag['steps']} steps",
        base,
        f"header stamp - record time: {offsets or 'no stamps'}",
        f"skipped messages: {'; '.join(skipped) if skipped else 'none'}",
    ]
    if bag["skipped_episodes"]:
        parts.append(
            "skipped episodes: "
            + "; ".join(f"{s['source']}: {s['reason']}" for s in bag["skipped_episodes"])
        )
    gaps = [f"{g['topic']} {g['length_s']:.2f} s at {g['start_s']:.2f} s" for g in bag["gaps"]]
    if gaps:
        parts.append(
            f"gaps > max_gap: {len(gaps)} ({'; '.join(gaps)}), "
            f"{bag['gap_steps_dropped']} steps dropped, episode split"
        )
    else:
        parts.append("gaps > max_gap: none")
    parts.append(f"chunk CRCs {bag['chunk_crc']}")
    return " | ".join(parts)


def recorded_camera_types(ingest: list[dict[str, Any]], topics: list[str]) -> list[str]:
    """The message type of each camera topic in the bags (`summary["camera_types"]`), in
    `topics` order, for the checkpoint; [] when a summary predates the field (the node then
    goes by the topic name). ValueError when bags disagree on a topic's type, naming both."""
    seen: dict[str, tuple[str, str]] = {}
    for bag in ingest:
        types = bag.get("camera_types")
        if not isinstance(types, dict):
            return []
        for topic in topics:
            msgtype = types.get(topic)
            if msgtype is None:
                return []
            first = seen.setdefault(topic, (msgtype, bag["bag"]))
            if first[0] != msgtype:
                raise ValueError(
                    f"camera topic {topic} is {first[0]} in bag {first[1]} but {msgtype} in bag "
                    f"{bag['bag']}: a checkpoint subscribes to one type; re-record or split the "
                    "bags into two trainings"
                )
    return [seen[t][0] for t in topics] if seen else []
