"""Inference acceleration beside the network: the choice of matrix-product kernel
(kernels.py), convolutions packed as matrix products (packing.py), TorchScript traces of the
trunk and the camera encoders (trace.py), the denoising loop as a CUDA graph (cudagraph.py) and
the choice of precision per part (precision.py). The network (`policy/unet1d.py`) and the policy
(`policy/modeling.py`) call into these; nothing here changes the math beyond rounding (the tests
compare each path with the plain forward)."""
