"""Building the config dataclasses (PolicyConfig, DataConfig, TrainConfig) from parsed YAML."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")


def dataclass_from_mapping(cls: type[T], data: Any, where: str) -> T:
    """`cls(**data)`; a non-mapping, unknown keys or a failed validation are a ValueError that
    names `where` (the file or section) and, for unknown keys, the known fields."""
    name = cls.__name__
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping of {name} fields, got {data!r}")
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(
            f"{where}: unknown {name} field(s) {unknown}; known fields: {sorted(known)}"
        )
    try:
        return cls(**data)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from exc
