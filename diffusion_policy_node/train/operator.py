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

import json
import select
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

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
    records: list[dict[str, Any]] = []
    final: dict[str, Any] | None = None
    error = None
    with (
        open(logs / "driver.log", "w") as driver_log,
        open(episodes_path, "w") as episodes_file,
    ):
        driver = subprocess.Popen(
            list(cmd),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=driver_log,
            text=True,
        )
        if driver.stdin is None or driver.stdout is None:  # PIPEs: never None
            raise RuntimeError("the episode driver has no stdin/stdout pipes")
        try:
            for line in driver.stdout:
                record = json.loads(line)
                if "prompt" in record:
                    try:
                        reply: dict[str, Any] = {"answer": ask(record["text"], record["timeout"])}
                    except EOFError:
                        reply = {"quit": True}
                    driver.stdin.write(json.dumps(reply) + "\n")
                    driver.stdin.flush()
                elif "error" in record:
                    error = record["error"]
                elif record.get("done"):
                    final = record
                else:
                    record = on_record(record)
                    records.append(record)
                    episodes_file.write(json.dumps(record) + "\n")
                    episodes_file.flush()
        finally:
            driver.stdin.close()
        if driver.wait() != 0 and error is None:
            error = f"episode driver exited with {driver.returncode}; see {logs}/driver.log"
    return records, final, error
