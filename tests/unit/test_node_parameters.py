"""policy_node's parameter table (ros/policy_node_params.py) is the one source of its defaults:
the dataclass defaults, config/policy_node.yaml and docs/parameters.md agree with it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from diffusion_policy_node.ros.parameters import ParamSpec, parameters_markdown
from diffusion_policy_node.ros.policy_node_params import PARAMETERS
from diffusion_policy_node.runtime.settings import PolicyNodeParams

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "parameters.md"
YAML = REPO / "config" / "policy_node.yaml"
SOURCE = "diffusion_policy_node/ros/policy_node_params.py"


def table_defaults() -> dict[str, object]:
    return {p.name: p.default for p in PARAMETERS}


def dataclass_defaults() -> dict[str, object]:
    return {f.name: f.default for f in dataclasses.fields(PolicyNodeParams)}


def test_dataclass_defaults_are_the_table_defaults() -> None:
    table, fields = table_defaults(), dataclass_defaults()
    assert sorted(fields) == sorted(table), "PolicyNodeParams fields != declared parameters"
    differ = {n: (fields[n], table[n]) for n in table if fields[n] != table[n]}
    assert differ == {}, (
        f"PolicyNodeParams default != parameter table (dataclass, table): {differ}"
    )


def test_yaml_values_are_the_table_defaults() -> None:
    values = yaml.safe_load(YAML.read_text())["policy_node"]["ros__parameters"]
    scalars = {p.name: p.default for p in PARAMETERS if not p.kind.endswith("_array")}
    assert values == scalars
    text = YAML.read_text()
    # list parameters are documented commented out (an empty YAML list has no type)
    missing = [p.name for p in PARAMETERS if f"# {p.name}:" not in text and p.name not in values]
    assert missing == [], f"{YAML} does not mention {missing}"


def test_parameters_doc_is_generated_from_the_table() -> None:
    expected = parameters_markdown("policy_node", PARAMETERS, SOURCE)
    assert DOC.read_text() == expected, (
        f"{DOC} is stale: run `python scripts/make_parameters_doc.py`"
    )


@pytest.mark.parametrize(
    "change",
    [
        lambda p: dataclasses.replace(p, default=p.default + 1) if p.kind == "int" else p,
        lambda p: dataclasses.replace(p, description=p.description + " More."),
    ],
)
def test_the_doc_check_sees_a_changed_parameter(change) -> None:
    changed: tuple[ParamSpec, ...] = tuple(change(p) for p in PARAMETERS)
    assert changed != PARAMETERS
    assert parameters_markdown("policy_node", changed, SOURCE) != DOC.read_text()
