"""Write docs/parameters.md from policy_node's parameter table (ros/policy_node_params.py).

    python scripts/make_parameters_doc.py

tests/unit/test_node_parameters.py fails when the page and the table disagree.
"""

from __future__ import annotations

from pathlib import Path

from diffusion_policy_node.ros.parameters import parameters_markdown
from diffusion_policy_node.ros.policy_node_params import PARAMETERS

DOC = Path(__file__).resolve().parents[1] / "docs" / "parameters.md"
SOURCE = "diffusion_policy_node/ros/policy_node_params.py"


def render() -> str:
    return parameters_markdown("policy_node", PARAMETERS, SOURCE)


def main() -> None:
    DOC.write_text(render())
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
