"""Building the config dataclasses (PolicyConfig, DataConfig, TrainConfig) from YAML, the
check of their fields that take one of a fixed set of values, and the command lines'
`--set SECTION.FIELD=VALUE` overrides."""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


def load_yaml(path: str | os.PathLike, what: str) -> Any:
    """The parsed YAML document at `path`; an unreadable file or bad YAML is a ValueError that
    starts with `what` and the path (e.g. "data config config/robots/sim_arm/data.yaml: ...")."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"{what} {path}: cannot be read ({exc}); check the path") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{what} {path}: not valid YAML ({exc})") from exc


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


def check_choices(
    config: Any,
    choices: Mapping[str, tuple[Any, ...]],
    bad: Callable[[str, Any, str], Exception],
) -> None:
    """Each field `name` of `config` one of `choices[name]`, checked in the mapping's order; the
    first that is not raises `bad(name, value, "expected one of (...)")`."""
    for name, allowed in choices.items():
        value = getattr(config, name)
        if value not in allowed:
            raise bad(name, value, f"expected one of {allowed}")


def add_overrides_argument(
    parser: argparse.ArgumentParser, sections: Sequence[str], example: str, note: str = ""
) -> None:
    """The repeatable `--set SECTION.FIELD=VALUE` option (into `args.overrides`, each read with
    `parse_override`); `note` starts its help."""
    section = sections[0] if len(sections) == 1 else "SECTION"
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar=f"{section}.FIELD=VALUE",
        help=f"{note}override a config value, e.g. --set {example} (repeatable)",
    )


def parse_override(item: str, sections: Sequence[str]) -> tuple[str, str, Any]:
    """(section, field, value) of the override `item` "SECTION.FIELD=VALUE", the value parsed as
    YAML; ValueError naming `item` when it is not one or its SECTION is not in `sections`."""
    key, sep, text = item.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or section not in sections or not name:
        raise ValueError(
            f"override {item!r}: expected SECTION.FIELD=VALUE with SECTION one of "
            f"{', '.join(sections)}"
        )
    try:
        return section, name, yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"override {item!r}: value is not valid YAML ({exc})") from exc
