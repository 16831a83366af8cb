"""Write rosbag2 bags (mcap or sqlite3) from already-serialized CDR messages, with rosbags.

ROS-free: the recorder node (`ros/recorder_node.py`) hands over the raw CDR bytes it received
(`create_subscription(..., raw=True)`), so nothing is deserialized or converted per message.
Every topic is registered with its message definition (`msgdef`, ros2msg text) and RIHS01 hash,
taken from rosbags' Jazzy typestore or registered from `.msg` text for types it does not know,
so `ros2 bag info` / `ros2 bag play` and mcap tools can decode the bag. The metadata.yaml is
the standard one rosbags writes (rosbag2 metadata version 8 by default, 9 optional, as newer
distributions write). Humble's rosbag2 may refuse metadata written for newer distributions; there,
delete metadata.yaml and run `ros2 bag reindex <bag>` (the storage files themselves are fine).
Offered QoS profiles are not recorded (`ros2 bag play` then publishes with its default QoS).
mcap chunks carry their CRC-32 (rosbags' own writer leaves it 0, which means "not computed"), so
the bag reader can tell a damaged chunk from a good one.
"""

from __future__ import annotations

import logging
import re
import struct
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

__all__ = ["STORAGE_FORMATS", "BagWriter", "BagWriterError", "msgtype_dependencies"]

log = logging.getLogger(__name__)

STORAGE_FORMATS = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
BAG_VERSIONS = (8, 9)
_MSGTYPE = re.compile(r"^[A-Za-z][\w]*/msg/[A-Za-z][\w]*$")
# Chunk record: opcode (1), record length (8), message start/end time (8 + 8), uncompressed
# size (8), then the uncompressed CRC-32 (4) (mcap spec, "Chunk (op=0x06)").
_CHUNK_CRC_OFFSET = 1 + 8 + 8 + 8 + 8


class BagWriterError(ValueError):
    """A bag cannot be written as asked; the message names the bag/topic and what to do."""


def msgtype_dependencies(text: str, msgtype: str) -> list[str]:
    """Message types (`pkg/msg/Name`) that the `.msg` definition `text` of `msgtype` uses."""
    types = get_types_from_msg(text, msgtype)
    deps: list[str] = []
    for _consts, fields in types.values():
        for _name, desc in fields:
            deps.extend(_nested_names(desc))
    return sorted({d for d in deps if d != msgtype})


def _nested_names(desc: Any) -> list[str]:
    """Names of message types inside a rosbags field descriptor (base, array or sequence)."""
    kind, spec = desc
    if getattr(kind, "name", str(kind)) == "NAME":
        return [str(spec)]
    if isinstance(spec, tuple) and spec and isinstance(spec[0], tuple):
        return _nested_names(spec[0])
    return []


class BagWriter:
    """One rosbag2 bag folder. `add_topic` every topic first, then `write` raw CDR messages.

    path: bag folder to create (must not exist). storage: "mcap" (default) or "sqlite3".
    definitions: extra `.msg` texts {msgtype: text} for types missing from the Jazzy typestore
    (their nested types too, unless the store knows them).
    """

    def __init__(
        self,
        path: str | Path,
        storage: str = "mcap",
        version: int = 8,
        definitions: Mapping[str, str] | None = None,
    ) -> None:
        self.path = Path(path)
        if storage not in STORAGE_FORMATS:
            raise BagWriterError(
                f"bag {self.path}: storage={storage!r} is not supported; use one of "
                f"{sorted(STORAGE_FORMATS)}"
            )
        if version not in BAG_VERSIONS:
            raise BagWriterError(
                f"bag {self.path}: version={version!r}; use one of {BAG_VERSIONS}"
            )
        if self.path.exists():
            raise BagWriterError(
                f"bag {self.path}: already exists; choose another name or remove it"
            )
        self.storage = storage
        self.typestore = get_typestore(Stores.ROS2_JAZZY)
        if definitions:
            self.register_definitions(definitions)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = Writer(self.path, version=version, storage_plugin=STORAGE_FORMATS[storage])
        self._writer.open()
        if storage == "mcap":
            _write_chunk_crcs(self._writer.storage, self.path)
        self._connections: dict[str, Any] = {}
        self.message_counts: dict[str, int] = {}
        self.first_ns: int | None = None
        self.last_ns: int | None = None
        self.closed = False

    def knows(self, msgtype: str) -> bool:
        """Whether the typestore has a definition for `msgtype` (`pkg/msg/Name`)."""
        return msgtype in self.typestore.fielddefs

    def register_definitions(self, definitions: Mapping[str, str]) -> None:
        """Add `.msg` definitions {msgtype: text} to this writer's typestore."""
        types: dict[str, Any] = {}
        for msgtype, text in definitions.items():
            if not _MSGTYPE.match(msgtype):
                raise BagWriterError(
                    f"bag {self.path}: message type {msgtype!r} must look like pkg/msg/Name"
                )
            try:
                types.update(get_types_from_msg(text, msgtype))
            except Exception as exc:  # rosbags raises its own parse errors
                raise BagWriterError(
                    f"bag {self.path}: definition of {msgtype} does not parse as .msg: {exc}"
                ) from exc
        self.typestore.register(types)

    def add_topic(self, topic: str, msgtype: str) -> None:
        """Register `topic` with message type `msgtype` (e.g. `sensor_msgs/msg/Image`)."""
        self._check_open()
        if topic in self._connections:
            raise BagWriterError(f"bag {self.path}: topic {topic} was already added")
        if not self.knows(msgtype):
            raise BagWriterError(
                f"bag {self.path} topic {topic}: message type {msgtype!r} is unknown to the "
                "rosbags Jazzy typestore; pass its .msg text in `definitions`"
            )
        self._connections[topic] = self._writer.add_connection(
            topic, msgtype, typestore=self.typestore
        )
        self.message_counts[topic] = 0

    @property
    def topics(self) -> list[str]:
        return list(self._connections)

    def write(self, topic: str, timestamp_ns: int, data: bytes | bytearray | memoryview) -> None:
        """Append one CDR-serialized message received at `timestamp_ns` (record time)."""
        self._check_open()
        conn = self._connections.get(topic)
        if conn is None:
            raise BagWriterError(f"bag {self.path}: topic {topic} was not added; add_topic first")
        if timestamp_ns < 0:
            raise BagWriterError(
                f"bag {self.path} topic {topic}: negative timestamp {timestamp_ns} ns"
            )
        self._writer.write(conn, int(timestamp_ns), bytes(data))
        self.message_counts[topic] += 1
        self.first_ns = timestamp_ns if self.first_ns is None else min(self.first_ns, timestamp_ns)
        self.last_ns = timestamp_ns if self.last_ns is None else max(self.last_ns, timestamp_ns)

    def close(self) -> dict[str, int]:
        """Finish the bag (writes metadata.yaml); returns the message count per topic."""
        if not self.closed:
            self.closed = True
            self._writer.close()
        return dict(self.message_counts)

    def _check_open(self) -> None:
        if self.closed:
            raise BagWriterError(f"bag {self.path}: already closed")

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _write_chunk_crcs(storage: Any, path: Path) -> None:
    """Make rosbags' mcap writer fill in each chunk's CRC-32 of its uncompressed records: the
    chunk is written as usual, then its CRC field (0 so far) is overwritten in place."""
    close_chunk = getattr(storage, "close_chunk", None)
    if close_chunk is None or not hasattr(storage, "bio") or not hasattr(storage, "chunk"):
        log.warning(
            "bag %s: this rosbags version's mcap writer is not the one expected; chunks are "
            "written without CRCs (damage inside them cannot be detected)",
            path,
        )
        return

    def close_chunk_with_crc() -> None:
        crc = zlib.crc32(storage.chunk.bio.getbuffer())
        start = storage.bio.tell()
        close_chunk()
        end = storage.bio.tell()
        storage.bio.seek(start + _CHUNK_CRC_OFFSET)
        storage.bio.write(struct.pack("<I", crc))
        storage.bio.seek(end)

    storage.close_chunk = close_chunk_with_crc
