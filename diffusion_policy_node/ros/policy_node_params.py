"""Parameters of `policy_node`: declared in one place, read once into a frozen dataclass.

`PARAMETERS` is the one source of every parameter's name, type, default, description and
range: `declare(node)` declares them (at construction), `read_params(node)` reads them into
`PolicyNodeParams` (raw values, validated; at configure). The defaults of `PolicyNodeParams`
(`runtime/settings.py`, which may not import this layer) and of `config/policy_node.yaml` are
checked against it by `tests/unit/test_node_parameters.py`, and `docs/parameters.md` is
generated from it (`python scripts/make_parameters_doc.py`).
The ROS-free rest lives in `runtime/settings.py`: `resolve_settings(params, config)` merges the
values with the checkpoint's config into the one `NodeSettings`; `runtime/limits.py` gives the
safety limits. After configure the node sets the parameters that default to "the checkpoint's"
to their effective values (`effective_values`), so `ros2 param get/dump` show what runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from diffusion_policy_node.runtime.safety import SafetyLimits
from diffusion_policy_node.runtime.settings import NodeSettings, PolicyNodeParams

from .parameters import ParamSpec, declare_parameters

if TYPE_CHECKING:
    from rclpy.node import Node


PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec(
        "checkpoint", "string", "", "Checkpoint folder (config.yaml + safetensors). Required."
    ),
    ParamSpec(
        "camera_topics",
        "string_array",
        [],
        "Camera topics in the checkpoint's camera order; empty: the checkpoint's. Each is "
        "subscribed with the message type the checkpoint recorded from the training bags "
        "(sensor_msgs/Image or CompressedImage); checkpoints that do not record it: topics "
        "ending in /compressed are CompressedImage, others Image.",
    ),
    ParamSpec("joint_state_topic", "string", "/joint_states", "sensor_msgs/JointState topic."),
    ParamSpec(
        "joint_names",
        "string_array",
        [],
        "Observed joints (read by name from the JointState), in the checkpoint's order; empty: "
        "the checkpoint's. Other names rename the checkpoint's joints position by position.",
    ),
    ParamSpec(
        "control_rate_hz",
        "double",
        0.0,
        "Control rate; must equal 1/dt of the checkpoint (0: take it from the checkpoint).",
        (0.0, 1000.0),
    ),
    ParamSpec(
        "output_mode",
        "string",
        "",
        "Empty: each action group as recorded (JointTrajectory groups get chunks for a "
        "joint_trajectory_controller, Float64MultiArray groups one command per tick for a "
        "forward controller); chunk or stream: every group as that type.",
    ),
    ParamSpec(
        "output_topics",
        "string_array",
        [],
        "Command topic of each action group, in the checkpoint's group order; empty: the "
        "recorded command topics (dp-info lists the groups).",
    ),
    ParamSpec(
        "output_topic",
        "string",
        "",
        "Command topic of a checkpoint with one action group; empty: the recorded one "
        "(/arm_controller/joint_trajectory or /forward_position_controller/commands when "
        "output_mode changes its type).",
    ),
    ParamSpec(
        "num_inference_steps",
        "int",
        0,
        "Denoising steps per chunk (DDIM); 0: the checkpoint's.",
        (0, 1000),
    ),
    ParamSpec("device", "string", "auto", "auto | cuda | cuda:N | cpu."),
    ParamSpec(
        "acceleration",
        "string",
        "jit",
        "Inference speed-up keeping the math: jit (TorchScript-frozen encoder and U-Net, CPU or "
        "CUDA), cudagraph (CUDA, DDIM eta=0), none.",
    ),
    ParamSpec(
        "precision",
        "string",
        "auto",
        "Inference precision: auto (per part: CUDA bf16; on a CPU with AVX-512-BF16/AMX the "
        "camera encoders bf16, the ε-network bf16 when >= 64 MiB; fp32 elsewhere), "
        "fp32, bf16, bf16-encoder (encoders bf16, ε-network fp32).",
    ),
    ParamSpec(
        "blend_mode",
        "string",
        "inpaint",
        "How chunks combine: inpaint (real-time chunking: the new chunk is sampled to "
        "continue the actions that execute while it is computed, then replaces them; the "
        "default), replace (newest wins) or ensemble (weighted mean).",
    ),
    ParamSpec(
        "trajectory_derivatives",
        "string",
        "accelerations",
        "What JointTrajectory points carry besides positions: accelerations (velocities and "
        "accelerations: JTC runs quintic splines, acceleration continuous), velocities (cubic) "
        "or none (positions only: JTC interpolates linearly, or fits splines itself with its "
        "positions_upsampling). The velocities come from one C2 spline through the chunk, "
        "starting from what executes when it lands; the last point is at rest.",
    ),
    ParamSpec(
        "ensemble_m",
        "double",
        0.1,
        "Ensemble weight decay m in w_i = exp(-m*i), i = 0 the oldest prediction.",
        (0.0, 10.0),
    ),
    ParamSpec(
        "inpaint_overlap",
        "int",
        4,
        "inpaint: steps after the frozen prefix that are guided towards the previous chunk.",
        (0, 1000),
    ),
    ParamSpec(
        "inpaint_decay",
        "double",
        0.5,
        "inpaint: guidance over the overlap decays as exp(-decay * i), i = 1 .. overlap.",
        (0.0, 100.0),
    ),
    ParamSpec(
        "inpaint_guidance",
        "double",
        1.0,
        "inpaint: weight of the overlap guidance (0: none, 1: full); the prefix that executes "
        "during inference is always frozen.",
        (0.0, 1.0),
    ),
    ParamSpec(
        "max_obs_age",
        "double",
        0.5,
        "Hold (publish nothing new) when any input is older than this many seconds.",
        (0.0, 3600.0),
    ),
    ParamSpec(
        "joint_lower_limits",
        "double_array",
        [],
        "Lower position limit of each commanded joint; empty: the URDF's, else the "
        "demonstrated range minus a margin.",
    ),
    ParamSpec(
        "joint_upper_limits",
        "double_array",
        [],
        "Upper position limit of each commanded joint; empty: the URDF's, else the "
        "demonstrated range plus a margin.",
    ),
    ParamSpec(
        "max_joint_velocity",
        "double_array",
        [],
        "Max joint speed (units/s), one value for all joints or one per joint; empty: the "
        "URDF's velocity limits, else the width of each joint's limit range per second.",
    ),
    ParamSpec(
        "limit_margin_frac",
        "double",
        0.1,
        "Margin (fraction of the span) on both sides of the demonstrated range, for joints "
        "without URDF or parameter limits.",
        (0.0, 10.0),
    ),
    ParamSpec(
        "min_limit_span",
        "double",
        0.2,
        "Demonstrated-range limits are widened to at least this span (rad or m), so a joint "
        "that barely moved in the demonstrations is not frozen.",
        (1e-6, 1000.0),
    ),
    ParamSpec(
        "robot_description_file",
        "string",
        "",
        "URDF file with the robot's joint limits; empty: the robot_description_topic.",
    ),
    ParamSpec(
        "robot_description_topic",
        "string",
        "/robot_description",
        "std_msgs/String topic (transient local, as robot_state_publisher latches it) with "
        "the URDF, waited for at configure; empty: no URDF (limits from the demonstrations, "
        "a warning per joint).",
    ),
    ParamSpec(
        "robot_description_timeout",
        "double",
        10.0,
        "Seconds (wall time) configure waits for the robot_description_topic; configure fails "
        "naming the topic if it does not come.",
        (0.0, 600.0),
    ),
    ParamSpec(
        "autostart",
        "bool",
        True,
        "Configure at start-up (and activate if start_active); false: wait for the lifecycle "
        "transitions (~/change_state).",
    ),
    ParamSpec(
        "start_active",
        "bool",
        True,
        "With autostart: activate after configure (else stay inactive until activate or ~/start).",
    ),
    ParamSpec(
        "action_lead",
        "double",
        -1.0,
        "Seconds after its grid step at which an action is to be reached "
        "(docs/design.md#action-time-convention); -1: the checkpoint's (dt for recorded "
        "JointTrajectory commands, 0 for stream/next_state).",
        (-1.0, 3600.0),
    ),
    ParamSpec(
        "inference_margin",
        "double",
        0.0,
        "Extra seconds of lead when deciding to start the next inference.",
        (0.0, 10.0),
    ),
    ParamSpec(
        "start_idle_chunks_late",
        "bool",
        True,
        "A chunk that lands while the arm stands still (first chunk, after a hold or a dry "
        "schedule) starts at its landing tick instead of skipping the actions whose time "
        "passed during inference; false: always anchored at the observation time.",
    ),
    ParamSpec(
        "inference_timeout",
        "double",
        10.0,
        "An inference that has not returned after this many seconds is an ERROR: hold and "
        "restart the inference worker; 0: wait forever.",
        (0.0, 3600.0),
    ),
    ParamSpec(
        "inference_delay_ms",
        "double",
        0.0,
        "Artificial delay added to every inference (evaluation of slow models and of chunk "
        "blending under delay); 0 on a robot.",
        (0.0, 60000.0),
    ),
    ParamSpec(
        "torch_threads",
        "int",
        0,
        "torch.set_num_threads for inference; 0: one per available core (OpenMP threads wait "
        "passively, so a busy neighbour process costs a core, not the pool; "
        "docs/performance.md).",
        (0, 256),
    ),
    ParamSpec(
        "warmup_runs",
        "int",
        2,
        "Inferences run at start-up before going active (latency estimate, CUDA init).",
        (0, 100),
    ),
    ParamSpec("seed", "int", -1, "Sampling seed (reset restarts the noise); -1: unseeded."),
    ParamSpec(
        "inference_process",
        "bool",
        True,
        "Run the policy in a child process (own GIL: the DDIM loop's Python cannot delay the "
        "control loop); false: a thread in the node process.",
    ),
    ParamSpec(
        "inference_nice",
        "int",
        0,
        "Nice value of the inference process (0..19): higher leaves more CPU to control.",
        (0, 19),
    ),
    ParamSpec(
        "stream_encoder",
        "bool",
        False,
        "Encode each camera frame as it arrives (on the inference worker, between chunks) and "
        "keep the features for the observation window, so a chunk request runs only the "
        "denoising trunk; costs the encoder's CPU time per camera frame (docs/performance.md).",
    ),
    ParamSpec(
        "control_priority",
        "int",
        0,
        "SCHED_FIFO priority of the control thread (1..99, needs rtprio permission, e.g. "
        "limits.conf); 0: normal scheduling.",
        (0, 99),
    ),
    ParamSpec(
        "spin_lead_ms",
        "double",
        1.0,
        "Wall-clock control loop: sleep until this long before each tick, then busy-wait, so "
        "the thread is already running at the tick (no wake-up latency); 0: sleep only.",
        (0.0, 10.0),
    ),
)


def declare(node: Node) -> tuple[bool, bool]:
    """Declare every parameter of `PARAMETERS` on `node` (a wrong type or range fails here);
    returns (autostart, start_active). The rest is read at configure (`read_params`)."""
    values = declare_parameters(node, PARAMETERS)
    return bool(values["autostart"]), bool(values["start_active"])


def read_params(node: Node) -> PolicyNodeParams:
    """The current value of every declared parameter, validated (unset lists: empty)."""
    return PolicyNodeParams(**{p.name: p.value for p in current_parameters(node)})


def current_parameters(node: Node, names: Iterable[str] | None = None) -> list[Any]:
    """rclpy Parameters with the current values of `names` (default: all of `PARAMETERS`);
    an array declared by type and never set is an empty array of its type."""
    from rclpy.parameter import Parameter

    wanted = None if names is None else set(names)
    out = []
    for spec in PARAMETERS:
        if wanted is not None and spec.name not in wanted:
            continue
        if spec.kind.endswith("_array"):
            kind = (
                Parameter.Type.STRING_ARRAY
                if spec.kind == "string_array"
                else Parameter.Type.DOUBLE_ARRAY
            )
            value = node.get_parameter_or(spec.name, Parameter(spec.name, kind, [])).value
            out.append(Parameter(spec.name, kind, list(value or [])))
        else:
            out.append(node.get_parameter(spec.name))
    return out


def effective_values(
    settings: NodeSettings,
    limits: SafetyLimits,
    steps: int,
    precision: str,
    device: str | None = None,
) -> dict[str, Any]:
    """The effective value of each parameter whose default means "from the checkpoint" (or
    the robot description, or the hardware: `precision` auto -> fp32 | bf16 | bf16-encoder,
    `device` auto -> cpu | cuda:0): what `ros2 param get` should show while configured."""
    values: dict[str, Any] = {
        "camera_topics": list(settings.camera_topics),
        "joint_names": list(settings.joint_names),
        "output_topics": list(settings.output_topics),
        "control_rate_hz": float(settings.control_rate_hz),
        "num_inference_steps": int(steps),
        "action_lead": float(settings.action_lead),
        "joint_lower_limits": [float(v) for v in limits.lower],
        "joint_upper_limits": [float(v) for v in limits.upper],
        "max_joint_velocity": [float(v) for v in limits.max_velocity],
        "precision": precision,
    }
    if settings.output_mode != "mixed":
        values["output_mode"] = settings.output_mode
    if device is not None:
        values["device"] = str(device)
    return values
