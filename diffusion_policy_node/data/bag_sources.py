"""Finding bags and opening them with advice that names the file (part of the bag reader).

What counts as one bag (`find_bags`):
- a folder with `metadata.yaml` (all the storage files it lists, rosbags reads them in order);
- a bare `.mcap`/`.db3` file;
- a *split recording without metadata.yaml*: the numbered parts `NAME_0.mcap … NAME_k.mcap` (same
  NAME and suffix, one folder, numbered from 0 without holes) are read as one bag, in part
  order; a part stands for the whole recording (passing several of its parts means it once).
  rosbag2 names the files of a split bag this way; for separate recordings use other names.
- a folder without `metadata.yaml` is searched (sorted, recursively) for the above.
The same bag given twice (the same path, a bag and a file inside it, or an identical copy of its
storage files) is an error.

Opening checks `metadata.yaml` first, so that a damaged file (not UTF-8, not YAML, not rosbag2
metadata), a newer rosbag2 version, an unsupported storage plugin, compression or serialization
format each get their own message naming the file, and only storage read errors say
"truncated or corrupt". mcap chunk CRCs are verified while reading (rosbags checks every chunk
whose CRC is set); chunks written without one are counted (`OpenBag.crc_note`).
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rosbags.rosbag2 import Reader

__all__ = [
    "STORAGE_SUFFIXES",
    "BagReadError",
    "OpenBag",
    "bag_files",
    "find_bags",
    "open_bag",
]

STORAGE_SUFFIXES = (".mcap", ".db3")
STORAGE_PLUGINS = ("mcap", "sqlite3")
MAX_METADATA_VERSION = 9  # the newest rosbag2 metadata version rosbags reads
META = "metadata.yaml"
_PART = re.compile(r"^(?P<name>.+)_(?P<index>\d+)$")
_MCAP_CRC_OFFSET = 1 + 8 + 8 + 8 + 8  # opcode, record length, start, end, uncompressed size
_FINGERPRINT_BYTES = 1 << 16


class BagReadError(ValueError):
    """A bag cannot be turned into episodes; the message names the bag, topic and field."""


# --------------------------------------------------------------------------- discovery


def _part_index(path: Path) -> tuple[str, int] | None:
    match = _PART.match(path.stem)
    return (match["name"], int(match["index"])) if match else None


def split_parts(path: Path) -> list[Path]:
    """The numbered parts of the split recording that storage file `path` belongs to (itself
    alone if it is not numbered), in part order; a hole in the numbering is an error."""
    key = _part_index(path)
    if key is None:
        return [path]
    name, _ = key
    parts: dict[int, Path] = {}
    for sibling in path.parent.iterdir():
        other = _part_index(sibling) if sibling.suffix == path.suffix else None
        if other is not None and other[0] == name and sibling.is_file():
            parts[other[1]] = sibling
    if 0 not in parts:
        return [path]  # NAME_3.mcap without NAME_0: not rosbag2's split naming, a bag of its own
    missing = [i for i in range(max(parts) + 1) if i not in parts]
    if missing:
        raise BagReadError(
            f"bag {path.parent / (name + '_0' + path.suffix)}: split recording {name} in "
            f"{path.parent} has parts {sorted(parts)} but part(s) {missing} "
            f"({', '.join(f'{name}_{i}{path.suffix}' for i in missing)}) are missing. Restore "
            "them, or rename the parts you want to read as separate bags."
        )
    return [parts[i] for i in sorted(parts)]


def _loose_bag(path: Path) -> Path:
    """The path standing for the bag of loose storage file `path`: its split part 0."""
    return split_parts(path)[0]


def find_bags(paths: Iterable[str | Path]) -> list[Path]:
    """Expand paths into bags: rosbag2 folders, storage files (a numbered part stands for its
    split recording, as its part 0), or folders holding them (see the module doc).

    A path that does not exist, a folder without a bag, and the same bag given twice are errors.
    """
    found: list[tuple[Path, str]] = []  # (bag, the argument it came from)
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise BagReadError(f"bag {path}: not found; check the path (cwd: {Path.cwd()})")
        if path.is_file():
            if path.suffix not in STORAGE_SUFFIXES:
                raise BagReadError(
                    f"bag {path}: not a rosbag2 storage file (expected {STORAGE_SUFFIXES}) "
                    "or a bag folder with metadata.yaml"
                )
            found.append((_loose_bag(path), str(path)))
        elif (path / META).exists():
            found.append((path, str(path)))
        else:
            inside = _search_folder(path)
            if not inside:
                raise BagReadError(
                    f"bag {path}: folder holds no rosbag2 bag (no metadata.yaml, no .mcap/.db3); "
                    "pass a bag folder or storage file"
                )
            found.extend((bag, str(path)) for bag in inside)
    return _without_duplicates(found)


def _search_folder(folder: Path) -> list[Path]:
    found: list[Path] = []
    for child in sorted(folder.iterdir()):
        if child.is_dir():
            found.extend([child] if (child / META).exists() else _search_folder(child))
        elif child.suffix in STORAGE_SUFFIXES:
            bag = _loose_bag(child)
            if bag not in found:
                found.append(bag)
    return found


def _without_duplicates(found: list[tuple[Path, str]]) -> list[Path]:
    """Keep each bag once; a bag reached twice is an error, except several parts of one split
    recording passed as files (they mean that recording once)."""
    bags: list[Path] = []
    origin: dict[Path, str] = {}
    owner: dict[Path, Path] = {}  # resolved storage file -> bag
    prints: dict[tuple, Path] = {}
    for bag, arg in found:
        if bag in origin:
            same_split = bag.is_file() and Path(arg).is_file() and Path(origin[bag]).is_file()
            if same_split and Path(arg).resolve() != Path(origin[bag]).resolve():
                continue
            raise BagReadError(
                f"bag {bag}: given twice (from {origin[bag]!r} and {arg!r}); every bag would "
                "become a second, identical episode. Pass each bag once."
            )
        files = [f.resolve() for f in storage_files(bag)]
        for f in files:
            if f in owner:
                raise BagReadError(
                    f"bag {bag}: its file {f} is also part of bag {owner[f]} (given as "
                    f"{origin[owner[f]]!r}); the same recording would be read twice. Pass it once."
                )
        fingerprint = tuple(_fingerprint(f) for f in files)
        if fingerprint in prints:
            raise BagReadError(
                f"bag {bag}: its storage files are identical to those of bag {prints[fingerprint]}"
                " (a copy of the same recording?); it would be read twice. Pass it once."
            )
        bags.append(bag)
        origin[bag] = arg
        owner.update((f, bag) for f in files)
        prints[fingerprint] = bag
    return bags


def _fingerprint(file: Path) -> tuple[int, str]:
    """Size and hash of the first and last 64 KiB: equal for copies, not for two recordings."""
    size = file.stat().st_size
    digest = hashlib.blake2b(digest_size=16)
    with file.open("rb") as fh:
        digest.update(fh.read(_FINGERPRINT_BYTES))
        if size > _FINGERPRINT_BYTES:
            fh.seek(max(size - _FINGERPRINT_BYTES, _FINGERPRINT_BYTES))
            digest.update(fh.read())
    return size, digest.hexdigest()


def storage_files(path: str | Path) -> list[Path]:
    """The storage (.mcap/.db3) files of a bag, in reading order."""
    path = Path(path)
    if path.is_file():
        return split_parts(path)
    if (path / META).exists():
        return sorted(p for p in path.iterdir() if p.suffix in STORAGE_SUFFIXES)
    return _parts_of_folder(path)


def bag_files(path: str | Path) -> list[Path]:
    """Every file making up a bag (a bag folder's files, or a storage file and its split parts),
    sorted: what the cache compares to notice a re-recorded bag."""
    path = Path(path)
    if path.is_file():
        return split_parts(path)
    return sorted(p for p in path.rglob("*") if p.is_file())


def _parts_of_folder(folder: Path) -> list[Path]:
    """A folder without metadata.yaml readable as one bag: one storage file or one split set."""
    loose = sorted(p for p in folder.iterdir() if p.suffix in STORAGE_SUFFIXES and p.is_file())
    heads = {_loose_bag(p) for p in loose}
    if len(heads) != 1:
        raise BagReadError(
            f"bag {folder}: folder has no metadata.yaml (recording interrupted?) and holds "
            f"{len(loose)} storage file(s) that are not the numbered parts of one recording. Run "
            f"`ros2 bag reindex {folder}` or pass the .mcap/.db3 file(s) inside it directly."
        )
    return split_parts(heads.pop())


# --------------------------------------------------------------------------- metadata.yaml


def check_metadata(bag: Path) -> None:
    """Refuse a metadata.yaml that rosbags would trip over, with advice naming the file."""
    meta = bag / META
    where = f"bag {bag} file {meta}"
    reindex = (
        f"Delete it and run `ros2 bag reindex {bag}`, or pass the .mcap/.db3 file(s) inside "
        "directly (they do not need metadata.yaml)."
    )
    raw = meta.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BagReadError(
            f"{where}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}): the "
            f"file is damaged. {reindex}"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise BagReadError(
            f"{where}: not valid YAML{at}: the file is damaged. {reindex}"
        ) from None
    info = data.get("rosbag2_bagfile_information") if isinstance(data, dict) else None
    if not isinstance(info, dict):
        keys = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise BagReadError(
            f"{where}: no rosbag2_bagfile_information mapping at the top (found {keys}): it is "
            f"not rosbag2 metadata. {reindex}"
        )
    version = info.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise BagReadError(f"{where} field version: {version!r} is not an integer. {reindex}")
    if version > MAX_METADATA_VERSION:
        raise BagReadError(
            f"{where} field version: {version}, newer than the rosbag2 metadata versions "
            f"rosbags reads (1-{MAX_METADATA_VERSION}); the bag was recorded by a newer ROS 2. "
            "Upgrade rosbags (`pip install -U rosbags`), or pass the .mcap file(s) inside "
            "directly (they carry their own index)."
        )
    storage = info.get("storage_identifier")
    if storage not in STORAGE_PLUGINS:
        raise BagReadError(
            f"{where} field storage_identifier: {storage!r} is not supported (only "
            f"{STORAGE_PLUGINS}). Convert the bag with `ros2 bag convert` to mcap."
        )
    mode = str(info.get("compression_mode") or "").lower()
    fmt = info.get("compression_format") or ""
    if mode not in ("", "none") and fmt != "zstd":
        raise BagReadError(
            f"{where} field compression_format: {fmt!r} is not supported (only zstd). "
            "Decompress or convert the bag with `ros2 bag convert`."
        )
    for entry in info.get("topics_with_message_count") or []:
        topic = entry.get("topic_metadata", {}) if isinstance(entry, dict) else {}
        fmt = topic.get("serialization_format", "cdr")
        if fmt != "cdr":
            raise BagReadError(_serialization_advice(where, topic.get("name"), fmt))
    for rel in info.get("relative_file_paths") or []:
        if not (bag / Path(str(rel)).name).exists():
            raise BagReadError(
                f"{where} field relative_file_paths: lists {rel}, which is missing from the "
                "folder. Restore it, or delete metadata.yaml and reindex with the files present."
            )


def _serialization_advice(where: str, topic: Any, fmt: Any) -> str:
    return (
        f"{where} topic {topic}: serialization format {fmt!r} is not supported; only 'cdr' "
        "(ROS 2's default) can be read. Re-record without --serialization-format, or convert "
        "the bag with `ros2 bag convert`."
    )


# --------------------------------------------------------------------------- opening


@dataclass
class _Part:
    path: Path  # what rosbags opened: a bag folder or one storage file
    reader: Reader


class OpenBag:
    """One bag opened for reading: one rosbags Reader, or one per part of a split recording."""

    def __init__(self, path: Path, parts: list[_Part]) -> None:
        self.path = path
        self.parts = parts
        self.topics: dict[str, str] = {}  # topic -> msgtype
        for part in parts:
            for topic, info in part.reader.topics.items():
                known = self.topics.setdefault(topic, info.msgtype)
                if known != info.msgtype:
                    raise BagReadError(
                        f"bag {path} topic {topic}: type {info.msgtype} in {part.path} but "
                        f"{known} in an earlier part; the parts are not one recording"
                    )
        self.crc_note = _crc_note(parts)

    @property
    def files(self) -> list[str]:
        return [str(p) for p in storage_files(self.path)]

    def expected_counts(self, topics: set[str]) -> Counter[str]:
        """Messages per topic that the bag's index promises."""
        out: Counter[str] = Counter()
        for part in self.parts:
            for conn in part.reader.connections:
                if conn.topic in topics:
                    out[conn.topic] += int(conn.msgcount)
        return out

    def messages(self, topics: set[str]) -> Iterator[tuple[Any, int, bytes]]:
        """(connection, record time ns, raw CDR) in record order; storage errors are
        BagReadErrors naming the bag (and the part)."""
        for part in self.parts:
            conns = [c for c in part.reader.connections if c.topic in topics]
            if conns:
                yield from _guarded(part.reader.messages(connections=conns), self.path, part)

    def first_message(self, topic: str) -> tuple[Any, int, bytes] | None:
        for part in self.parts:
            conns = [c for c in part.reader.connections if c.topic == topic]
            if conns:
                stream = _guarded(part.reader.messages(connections=conns), self.path, part)
                for item in stream:
                    stream.close()
                    return item
        return None

    def close(self) -> None:
        for part in self.parts:
            if part.reader.is_open:
                part.reader.close()


def _guarded(stream: Iterator, bag: Path, part: _Part) -> Iterator:
    while True:
        try:
            item = next(stream)
        except StopIteration:
            return
        except Exception as exc:
            raise BagReadError(_read_failure(bag, part.path, exc)) from exc
        yield item


def _read_failure(bag: Path, part: Path, exc: Exception) -> str:
    where = f"bag {bag}" + (f" file {part}" if part != bag else "")
    if "checksum" in str(exc).lower():
        return (
            f"{where}: chunk checksum (CRC) mismatch: the file is damaged (on disk or while "
            "copying). Copy it again from the source, re-record it, or leave it out."
        )
    return (
        f"{where}: reading failed ({type(exc).__name__}: {exc}). The bag is truncated or "
        "corrupt: re-record it, try `ros2 bag reindex`, or leave it out."
    )


def open_bag(path: Path) -> OpenBag:
    """Open a bag folder, storage file or split recording (see the module doc)."""
    if not path.exists():
        raise BagReadError(f"bag {path}: not found; check the path (cwd: {Path.cwd()})")
    if path.is_file() and path.suffix not in STORAGE_SUFFIXES:
        raise BagReadError(f"bag {path}: unknown storage file type; expected {STORAGE_SUFFIXES}")
    if path.is_dir() and (path / META).exists():
        check_metadata(path)
        targets = [path]
    else:
        targets = storage_files(path)
    parts: list[_Part] = []
    try:
        for target in targets:
            parts.append(_Part(target, _open_reader(target, path)))
        bag = OpenBag(path, parts)
        _check_parts_in_order(bag)
        _check_serialization(bag)
    except BaseException:
        for part in parts:
            if part.reader.is_open:
                part.reader.close()
        raise
    return bag


def _open_reader(target: Path, bag: Path) -> Reader:
    where = f"bag {bag}" + (f" file {target}" if target != bag else "")
    try:
        reader = Reader(target)
        reader.open()
    except Exception as exc:
        text = str(exc)
        if "Serialization format" in text:
            raise BagReadError(_serialization_advice(where, "(some)", text)) from exc
        if "version" in text.lower() or "metadata" in text.lower():
            raise BagReadError(
                f"{where}: metadata.yaml rejected by rosbags ({type(exc).__name__}: {exc}). "
                f"Delete it and run `ros2 bag reindex {bag}`, or pass the storage file(s)."
            ) from exc
        raise BagReadError(
            f"{where}: cannot be opened ({type(exc).__name__}: {exc}). The bag is truncated "
            "or corrupt: re-record it, try `ros2 bag reindex`, or leave it out."
        ) from exc
    return reader


def _check_parts_in_order(bag: OpenBag) -> None:
    previous: _Part | None = None
    for part in bag.parts:
        reader = part.reader
        if (
            previous is not None
            and reader.message_count
            and previous.reader.message_count
            and reader.start_time < previous.reader.end_time - 1
        ):
            raise BagReadError(
                f"bag {bag.path}: parts {previous.path.name} and {part.path.name} overlap in "
                "time, so they are not the consecutive parts of one split recording. Give "
                "them different names (or folders) to read them as separate bags."
            )
        previous = part


def _check_serialization(bag: OpenBag) -> None:
    for part in bag.parts:
        for conn in part.reader.connections:
            fmt = getattr(conn.ext, "serialization_format", "cdr")
            if fmt != "cdr":
                where = f"bag {bag.path}" + (f" file {part.path}" if part.path != bag.path else "")
                raise BagReadError(_serialization_advice(where, conn.topic, fmt))


def _mcap_storages(reader: Reader) -> list[Any]:
    storage = reader.storage
    inner = getattr(storage, "storages", None)
    return list(inner) if inner is not None else [storage]


def _crc_note(parts: list[_Part]) -> str:
    """'verified', or how many mcap chunks carry no CRC (corruption inside them goes unseen)."""
    total = missing = 0
    unknown = False
    for part in parts:
        for storage in _mcap_storages(part.reader):
            chunks = getattr(storage, "chunks", None)
            path = getattr(storage, "path", None)
            if not hasattr(storage, "data_end"):
                continue  # sqlite3: no chunks
            if chunks is None or path is None:
                unknown = True
                continue
            with open(path, "rb") as fh:
                for chunk in chunks:
                    fh.seek(chunk.chunk_start_offset + _MCAP_CRC_OFFSET)
                    (crc,) = struct.unpack("<I", fh.read(4))
                    total += 1
                    missing += crc == 0
    if unknown:
        return "unknown (rosbags internals changed)"
    if total == 0:
        return "n/a (no mcap chunks)"
    if missing:
        return (
            f"absent in {missing} of {total} mcap chunks (written without checksums, e.g. by "
            "rosbags or an older recorder): damage inside them cannot be detected"
        )
    return f"verified ({total} mcap chunks)"
