"""`dp-eval --operator`: the terminal side of an evaluation a person resets and judges.

The episode driver (`ros/eval_driver.py --operator`) asks on its stdout with
`{"prompt": KIND, "text": ..., "timeout": s|null}` lines; `run_operator_driver` shows each
prompt through `ask(text, timeout)` and writes the answer back as `{"answer": ...}` (null when
`timeout` passed without an answer) or `{"quit": true}` (the input closed). Every other line
is an episode record, a `{"done": ...}` or `{"error": ...}` line, as with `run_driver`.
`ask` is injected, so the prompts are tested without a terminal; `terminal_ask` is the real
one: the prompt on stderr, one line from stdin (select with a timeout).
"""

from __future__ import annotations

import select
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from diffusion_policy_node.eval.processes import run_driver

Ask = Callable[[str, "float | None"], "str | None"]


def terminal_ask(
    text: str, timeout: float | None, stdin: TextIO | None = None, out: TextIO | None = None
) -> str | None:
    """Print `text`, read one line (without its newline); None when `timeout` seconds passed
    first; EOFError when the input is closed."""
    stdin = sys.stdin if stdin is None else stdin
    out = sys.stderr if out is None else out
    print(f"dp-eval: {text}", file=out, flush=True)
    if timeout is not None:
        ready, _, _ = select.select([stdin], [], [], max(0.0, timeout))
        if not ready:
            print("dp-eval: (time up)", file=out, flush=True)
            return None
    line = stdin.readline()
    if not line:
        raise EOFError("the terminal input is closed")
    return line.rstrip("\n")


def run_operator_driver(
    cmd: Sequence[str],
    logs: Path,
    episodes_path: Path,
    on_record: Callable[[dict[str, Any]], dict[str, Any]],
    ask: Ask,
) -> tuple[list[dict[str, Any]], dict[str, Any] | None, str | None]:
    """`processes.run_driver` with the operator's prompts answered (see the module docstring):
    (records, the final `{"done": ...}` line or None, error or None)."""

    def answer(prompt: dict[str, Any]) -> dict[str, Any]:
        try:
            return {"answer": ask(prompt["text"], prompt["timeout"])}
        except EOFError:
            return {"quit": True}

    return run_driver(cmd, logs, episodes_path, on_record, on_prompt=answer)
