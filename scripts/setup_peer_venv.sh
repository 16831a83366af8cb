#!/usr/bin/env bash
# Create the peer venv for the side-by-side benchmarks (bench/peer_lerobot.py): LeRobot 0.3.2
# (the newest release whose pins allow the torch on this machine's disk; lerobot >= 0.5 needs
# Python 3.12) with torch 2.14.1 / torchvision 0.29.1. Idempotent; separate from .venv so the
# peer's pins never touch ours.
# usage: scripts/setup_peer_venv.sh [PYTHON] [VENV]
set -euo pipefail
python=${1:-python3}; venv=${2:-.venv-peer}
cd "$(dirname "$0")/.."
pins=(lerobot==0.3.2 torch==2.14.1 torchvision==0.29.1)
if [ -x "$venv/bin/python" ] && "$venv/bin/python" - "${pins[@]}" <<'PY' 2>/dev/null; then
import sys
from importlib.metadata import version
ok = all(version(p.split("==")[0]) .split("+")[0] == p.split("==")[1] for p in sys.argv[1:])
sys.exit(0 if ok else 1)
PY
  echo "peer venv: $venv already has ${pins[*]}"; exit 0
fi
start=$(date +%s)
[ -x "$venv/bin/python" ] || { echo "peer venv: creating $venv with $("$python" --version)"; "$python" -m venv "$venv"; }
echo "peer venv: installing ${pins[*]} (pip output in $venv/setup.log)"
if ! "$venv/bin/python" -m pip install "${pins[@]}" >"$venv/setup.log" 2>&1; then
  tail -n 30 "$venv/setup.log" >&2; echo "peer venv: pip install failed; full log in $venv/setup.log" >&2; exit 1
fi
"$venv/bin/python" -c 'import torch, lerobot.policies.diffusion.modeling_diffusion' \
  || { echo "peer venv: import check failed" >&2; exit 1; }
echo "peer venv: done in $(( $(date +%s) - start )) s"
