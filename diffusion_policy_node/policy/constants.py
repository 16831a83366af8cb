"""Batch keys shared by data, policy, runtime and node. Shapes use B=batch, T=time."""

# (B, n_obs_steps, state_dim) float32, joint positions in the order of the config's joint_names.
OBS_STATE = "observation.state"
# (B, n_obs_steps, n_cameras, 3, H, W) uint8 RGB (or float in [0, 1]), cameras in config order.
OBS_IMAGES = "observation.images"
# (B, n_obs_steps, n_cameras * 2 * num_keypoints) camera features already computed by the
# streaming encoder (runtime/frame_features.py); used instead of OBS_IMAGES when present.
OBS_IMAGE_FEATURES = "observation.image_features"
# (B, horizon, action_dim) float32, the action window starting at the first observation step.
ACTION = "action"
# (B, horizon) bool, True where the action is padding past the episode end (not in the loss).
ACTION_IS_PAD = "action_is_pad"
# Inpainting (real-time chunking, runtime/controller.py): (B, horizon, action_dim) float32 robot
# units, the actions already planned for the new chunk's steps (any value where the weight is 0),
# and (B, horizon) float32 weights in [0, 1]: 1 frozen to them, 0 sampled freely.
INPAINT_ACTIONS = "inpaint.actions"
INPAINT_WEIGHTS = "inpaint.weights"
