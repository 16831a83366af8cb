"""Inference acceleration beside the network: the choice of matrix-product kernel
(kernels.py), convolutions packed as matrix products (packing.py) and TorchScript traces of the
trunk (trace.py). The network in `policy/unet1d.py` calls into these; nothing here changes the
math (the tests compare each path with the plain forward)."""
