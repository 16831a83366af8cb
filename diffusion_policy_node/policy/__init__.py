"""torch-only policy: schedulers, ε-network, vision encoder, normalizer, checkpoints."""
