#!/usr/bin/env bash
# Create or update the project venv. Idempotent: re-running installs only what changed.
# usage: scripts/setup_venv.sh PYTHON ROS VENV   (ROS = wheels | system)
set -euo pipefail
python=${1:-python3}; ros=${2:-wheels}; venv=${3:-.venv}
cd "$(dirname "$0")/.."
start=$(date +%s)

case "$ros" in
  wheels)
    venv_flags=()
    reqs=(-r requirements/base.txt -r requirements/dev.txt -r requirements/ros-wheels.txt)
    constraints=requirements/constraints.txt ;;
  system)
    if ! "$python" -c 'import rclpy' 2>/dev/null; then
      echo "setup: ROS=system needs a sourced ROS 2 install (source /opt/ros/<distro>/setup.bash)," >&2
      echo "       but '$python -c \"import rclpy\"' fails." >&2
      exit 2
    fi
    venv_flags=(--system-site-packages)
    # colcon and ament_package come from the ROS install too.
    reqs=(-r requirements/base.txt "pytest>=8.4" ruff diffusers)
    # Keep the system numpy (ROS's compiled packages are built against it); pin the rest.
    constraints=$(mktemp)
    grep -vE '^(numpy|ros-|colcon|opencv)' requirements/constraints.txt > "$constraints" ;;
  *) echo "setup: ROS must be 'wheels' or 'system', got '$ros'" >&2; exit 2 ;;
esac

if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating $venv ($ros) with $("$python" --version)"
  "$python" -m venv "${venv_flags[@]}" "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade "setuptools>=68" wheel >/dev/null
echo "setup: installing dependencies (pip output in $venv/setup.log)"
if ! "$venv/bin/python" -m pip install "${reqs[@]}" -c "$constraints" >"$venv/setup.log" 2>&1; then
  tail -n 30 "$venv/setup.log" >&2; echo "setup: pip install failed; full log in $venv/setup.log" >&2; exit 1
fi
"$venv/bin/python" -m pip install --no-deps --no-build-isolation -e . >>"$venv/setup.log" 2>&1 \
  || { tail -n 30 "$venv/setup.log" >&2; exit 1; }
"$venv/bin/python" -c 'import torch, numpy, cv2, yaml, safetensors, rosbags, rclpy, sensor_msgs.msg' \
  || { echo "setup: import check failed" >&2; exit 1; }
echo "setup: done in $(( $(date +%s) - start )) s"
