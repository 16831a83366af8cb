"""`dp-node COMMAND [--node NAME]`: call a policy node's services without the `ros2` CLI.

    dp-node status                    # ~/status: the node's diagnostics as JSON
    dp-node start | stop | reset      # ~/start, ~/stop, ~/reset (std_srvs/Trigger)
    dp-node configure | activate | deactivate | cleanup | shutdown
                                      # lifecycle transitions (lifecycle_msgs/ChangeState)
    dp-node state                     # the lifecycle state (lifecycle_msgs/GetState)
    dp-node reset --node my_robot     # any node's Trigger service, e.g. an episode robot's

What `ros2 service call /policy_node/start std_srvs/srv/Trigger` and `ros2 lifecycle set
/policy_node activate` do, for an install from the PyPI wheels (which have no `ros2` CLI).
The reply is printed on stdout (JSON where the node answers JSON); the exit code is 0 when the
node accepted, 1 when it refused (the reason on stderr), 2 when the service did not answer
within `--timeout` (is the node running, in this ROS_DOMAIN_ID?).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from std_srvs.srv import Trigger

from .service_driver import call_service, spinning_node

TRIGGERS = ("status", "start", "stop", "reset", "pause", "unpause", "report")
TRANSITIONS = {
    "configure": Transition.TRANSITION_CONFIGURE,
    "activate": Transition.TRANSITION_ACTIVATE,
    "deactivate": Transition.TRANSITION_DEACTIVATE,
    "cleanup": Transition.TRANSITION_CLEANUP,
    "shutdown": Transition.TRANSITION_INACTIVE_SHUTDOWN,
}
COMMANDS = (*TRIGGERS, *TRANSITIONS, "state")


class ServiceUnavailableError(RuntimeError):
    """The service did not appear or answer in time."""


def call(node: Any, srv_type: type, name: str, request: Any, timeout: float) -> Any:
    """Call `name` and wait for the response (ServiceUnavailableError on a timeout)."""
    client = node.create_client(srv_type, name)
    return call_service(client, name, request, timeout, ServiceUnavailableError)


def run_command(node: Any, command: str, target: str, timeout: float) -> tuple[bool, str]:
    """(accepted, reply text) of `command` on node `target`."""
    base = f"/{target.strip('/')}"
    if command in TRIGGERS:
        resp = call(node, Trigger, f"{base}/{command}", Trigger.Request(), timeout)
        return bool(resp.success), str(resp.message)
    if command == "state":
        resp = call(node, GetState, f"{base}/get_state", GetState.Request(), timeout)
        return True, str(resp.current_state.label)
    req = ChangeState.Request()
    req.transition.id = TRANSITIONS[command]
    resp = call(node, ChangeState, f"{base}/change_state", req, timeout)
    if resp.success:
        state = call(node, GetState, f"{base}/get_state", GetState.Request(), timeout)
        return True, f"{command}: ok, now {state.current_state.label}"
    return False, f"{command}: refused by {base} (not valid from its current state?)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dp-node",
        description="Call a policy node's services (Trigger and lifecycle) without the ros2 CLI.",
        epilog="Example: dp-node activate --node policy_node",
    )
    parser.add_argument("command", choices=COMMANDS, help="what to ask the node")
    parser.add_argument("--node", default="policy_node", help="node name (default policy_node)")
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for the service"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.timeout > 0:
        print(f"dp-node: --timeout {args.timeout}: must be > 0", file=sys.stderr)
        return 2
    with spinning_node("dp_node_cli") as (node, _):
        try:
            ok, text = run_command(node, args.command, args.node, args.timeout)
        except ServiceUnavailableError as exc:
            print(f"dp-node: {exc}; is /{args.node.strip('/')} running in this ROS_DOMAIN_ID?",
                  file=sys.stderr)  # fmt: skip
            return 2
    if text.startswith("{"):
        text = json.dumps(json.loads(text), indent=1)
    if ok:
        print(text)
        return 0
    print(f"dp-node: {args.command} refused: {text}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
