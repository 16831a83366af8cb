"""Demonstration data: bag reader (the only rosbags user), episode cache, window sampler."""
