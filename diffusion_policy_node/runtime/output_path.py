"""One output path of the controller (trajectory or stream): which action columns it
commands, the state column of each, and its own safety filter over those joints' limits."""

from __future__ import annotations

from typing import Any

import numpy as np

from diffusion_policy_node.action_groups import indices_in

from .safety import SafetyFilter, SafetyLimits


class OutputPath:
    """One output path (trajectory or stream): the action columns of its groups' joints, the
    state column of each, and its safety filter over those joints' limits. `settings`: the
    node's `NodeSettings`."""

    def __init__(self, settings: Any, limits: SafetyLimits, want_trajectory: bool):
        action = settings.action_joints
        self.joints = tuple(
            j for g in settings.groups if g.is_trajectory == want_trajectory for j in g.joints
        )
        self.columns = indices_in(self.joints, action, "the action vector")
        self.state_columns = indices_in(self.joints, settings.joint_names, "the observed joints")
        self.safety = SafetyFilter(
            SafetyLimits(
                limits.lower[self.columns],
                limits.upper[self.columns],
                limits.max_velocity[self.columns],
            ),
            settings.dt,
        )

    def measured(self, state: np.ndarray | None) -> np.ndarray | None:
        """This path's joints of the measured state (observed-joint order)."""
        return None if state is None else state[self.state_columns]
