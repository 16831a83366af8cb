"""Inference acceleration beside the network: the choice of matrix-product kernel
(kernels.py), the U-Net's blocks swapped for packed forms that run each convolution as a matrix
product (packing.py, registered per block type), TorchScript traces of the trunk and the camera
encoders (trace.py), the denoising loop as a CUDA graph (cudagraph.py) and the choice of
precision per part (precision.py). The policy (`policy/modeling.py`) applies them; the network
(`policy/unet1d.py`) does not know of them. Nothing here changes the math beyond rounding (the
tests compare each path with the plain forward)."""
