"""Vision encoder of the policy: ResNet-18 with GroupNorm + spatial-softmax keypoints.

As in Chi et al. (2023) / robomimic: a ResNet-18 trunk without avgpool/fc whose BatchNorms are
GroupNorms (``groups = channels // 16``, robomimic's ``replace_bn_with_gn``), a spatial softmax
that turns feature maps into K expected (x, y) keypoints, and a Linear + ReLU on top. Random
crops at train time, the centre crop at inference. Written in plain torch (no torchvision); the
weights are always trained from scratch, never downloaded. Module names follow torchvision's
ResNet (``conv1``, ``bn1``, ``layer1``..``layer4``, ``downsample.0/1``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

GroupsFn = Callable[[int], int]


def _default_groups(channels: int) -> int:
    return channels // 16


def _norm_layer(norm: str, channels: int, groups_fn: GroupsFn) -> nn.Module:
    """GroupNorm(groups_fn(C), C) for "group", BatchNorm2d(C) for "batch" (torchvision's
    ResNet: running statistics at inference, batch statistics in training)."""
    if norm == "group":
        return nn.GroupNorm(groups_fn(channels), channels)
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    raise ValueError(f"resnet18_gn: norm must be 'group' or 'batch', got {norm!r}")


class BasicBlock(nn.Module):
    """ResNet basic block, GroupNorm or BatchNorm: (B, C_in, H, W) -> (B, C_out, H/s, W/s)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        groups_fn: GroupsFn,
        norm: str = "group",
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = _norm_layer(norm, out_channels, groups_fn)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = _norm_layer(norm, out_channels, groups_fn)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                _norm_layer(norm, out_channels, groups_fn),
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18GN(nn.Module):
    """ResNet-18 trunk with GroupNorm, no avgpool/fc: (B, 3, H, W) -> (B, 8w, ⌈H/32⌉, ⌈W/32⌉).

    ``width`` w is the channel count of the stem and the first stage (64 in the standard
    ResNet-18, stages w, 2w, 4w, 8w). A narrower trunk keeps the depth, strides and receptive
    field: width 32 has 1/4 of the parameters and multiply-adds (a CPU-trainable, repo-sized
    encoder for small tasks).
    """

    def __init__(
        self, groups_fn: GroupsFn = _default_groups, width: int = 64, norm: str = "group"
    ) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"resnet18_gn: width must be >= 1, got {width}")
        widths = (width, 2 * width, 4 * width, 8 * width)
        self.out_channels = widths[-1]
        for c in widths:
            g = groups_fn(c)
            if g < 1 or c % g:
                raise ValueError(
                    f"resnet18_gn: num_groups_fn({c}) = {g} must be a positive divisor of {c}"
                )
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = _norm_layer(norm, width, groups_fn)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        in_c = width
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            layer = nn.Sequential(
                BasicBlock(in_c, w, stride, groups_fn, norm),
                BasicBlock(w, w, 1, groups_fn, norm),
            )
            self.add_module(f"layer{i + 1}", layer)
            in_c = w
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)


def resnet18_gn(
    num_groups_fn: GroupsFn = _default_groups, width: int = 64, norm: str = "group"
) -> ResNet18GN:
    """ResNet-18 with GroupNorm(num_groups_fn(C), C) in place of every BatchNorm (or, with
    norm="batch", torchvision's BatchNorm2d), randomly initialised."""
    return ResNet18GN(num_groups_fn, width, norm)


def resnet_output_hw(height: int, width: int) -> tuple[int, int]:
    """Spatial size of the ResNet-18 feature map for an (height, width) input."""
    return math.ceil(height / 32), math.ceil(width / 32)


class SpatialSoftmax(nn.Module):
    """Spatial soft-argmax keypoints (Levine et al. 2016; robomimic's SpatialSoftmax).

    (B, C, H, W) -> 1x1 conv to K maps -> softmax over the H·W pixels -> expected (x, y) with
    pixel coordinates on ``linspace(-1, 1, W)`` × ``linspace(-1, 1, H)`` (x = column, y = row).
    ``forward`` returns the keypoints flattened to (B, 2K) as ``[x0, y0, x1, y1, ...]``;
    ``keypoints`` returns them as (B, K, 2).
    """

    def __init__(
        self,
        in_channels: int,
        height: int,
        width: int,
        num_keypoints: int = 32,
        temperature: float = 1.0,
    ) -> None:
        super().__init__()
        for name, v in (
            ("in_channels", in_channels),
            ("height", height),
            ("width", width),
            ("num_keypoints", num_keypoints),
        ):
            if v < 1:
                raise ValueError(f"SpatialSoftmax: {name} must be >= 1, got {v}")
        if not temperature > 0:
            raise ValueError(f"SpatialSoftmax: temperature must be > 0, got {temperature}")
        self.in_channels, self.height, self.width = in_channels, height, width
        self.num_keypoints = num_keypoints
        self.temperature = float(temperature)
        self.nets = nn.Conv2d(in_channels, num_keypoints, kernel_size=1)
        pos_y, pos_x = torch.meshgrid(
            torch.linspace(-1.0, 1.0, height), torch.linspace(-1.0, 1.0, width), indexing="ij"
        )
        # (H·W, 2) with columns (x, y); a buffer so it follows .to(device) and is saved.
        self.register_buffer("pos_grid", torch.stack([pos_x, pos_y], dim=-1).reshape(-1, 2))

    def keypoints(self, features: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, K, 2) expected (x, y) in [-1, 1]."""
        expected = (self.in_channels, self.height, self.width)
        if features.ndim != 4 or tuple(features.shape[1:]) != expected:
            raise ValueError(
                f"SpatialSoftmax: expected features of shape (B, {expected[0]}, {expected[1]}, "
                f"{expected[2]}), got {tuple(features.shape)}"
            )
        maps = self.nets(features).flatten(2)  # (B, K, H·W)
        attention = torch.softmax(maps / self.temperature, dim=-1)
        return attention @ self.pos_grid.to(attention.dtype)  # (B, K, 2)

    def forward(self, features: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, 2K)."""
        return self.keypoints(features).flatten(1)


def crop_images(
    images: Tensor, crop_shape: tuple[int, int], random: bool, generator: torch.Generator | None
) -> Tensor:
    """Crop (N, C, H, W) to (N, C, h, w): the centre crop, or an independent random crop per image.

    The centre offset is ``round((H - h) / 2)`` as torchvision's ``center_crop``. Random offsets
    are drawn on the images' device and applied with one gather (no per-image Python loop).
    """
    N, _, H, W = images.shape
    h, w = crop_shape
    if (h, w) == (H, W):
        return images
    if not random:
        top, left = round((H - h) / 2.0), round((W - w) / 2.0)
        return images[:, :, top : top + h, left : left + w]
    device = images.device
    top = torch.randint(0, H - h + 1, (N, 1), device=device, generator=generator)
    left = torch.randint(0, W - w + 1, (N, 1), device=device, generator=generator)
    rows = top + torch.arange(h, device=device)  # (N, h)
    cols = left + torch.arange(w, device=device)  # (N, w)
    n = torch.arange(N, device=device)[:, None, None]
    # Advanced indices separated by a slice go first: result (N, h, w, C).
    out = images[n, :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2)


class _CameraEncoder(nn.Module):
    """ResNet-18-GN -> SpatialSoftmax -> Linear(2K, 2K) -> ReLU: (N, 3, h, w) -> (N, 2K)."""

    def __init__(
        self, crop_hw: tuple[int, int], num_keypoints: int, width: int = 64, norm: str = "group"
    ) -> None:
        super().__init__()
        self.backbone = resnet18_gn(width=width, norm=norm)
        fh, fw = resnet_output_hw(*crop_hw)
        self.pool = SpatialSoftmax(self.backbone.out_channels, fh, fw, num_keypoints)
        self.out = nn.Linear(2 * num_keypoints, 2 * num_keypoints)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.out(self.pool(self.backbone(x))))


class ObservationEncoder(nn.Module):
    """Images + joint state of ``n_obs_steps`` frames -> the U-Net's global condition.

    ``forward(images, state)``: images (B, T, N, 3, H, W) uint8 (divided by 255) or float in
    [0, 1]; state (B, T, state_dim), already normalized. Returns (B, T·(N·2K + state_dim)),
    per step ``[camera 0 keypoint features, ..., camera N-1, state]`` (``state_first``: the
    state first), steps in time order.
    In training mode every image gets its own random crop; in eval mode the centre crop.
    """

    def __init__(
        self,
        n_cameras: int,
        image_shape: tuple[int, int, int],
        crop_shape: tuple[int, int] | None,
        state_dim: int,
        num_keypoints: int = 32,
        share_encoder: bool = False,
        encoder_width: int = 64,
        backbone_norm: str = "group",
        state_first: bool = False,
    ) -> None:
        super().__init__()
        image_shape = tuple(int(s) for s in image_shape)
        if n_cameras < 1:
            raise ValueError(f"ObservationEncoder: n_cameras must be >= 1, got {n_cameras}")
        if len(image_shape) != 3 or image_shape[0] != 3 or min(image_shape) < 1:
            raise ValueError(
                f"ObservationEncoder: image_shape must be (3, H, W) with H, W >= 1, "
                f"got {image_shape}"
            )
        if state_dim < 0:
            raise ValueError(f"ObservationEncoder: state_dim must be >= 0, got {state_dim}")
        if num_keypoints < 1:
            raise ValueError(
                f"ObservationEncoder: num_keypoints must be >= 1, got {num_keypoints}"
            )
        H, W = image_shape[1:]
        if crop_shape is None:
            crop_shape = (H, W)
        crop_shape = tuple(int(s) for s in crop_shape)
        if len(crop_shape) != 2 or not (1 <= crop_shape[0] <= H and 1 <= crop_shape[1] <= W):
            raise ValueError(
                f"ObservationEncoder: crop_shape must be (h, w) with 1 <= h <= {H} and "
                f"1 <= w <= {W} (image_shape {image_shape}), got {crop_shape}"
            )
        if resnet_output_hw(*crop_shape) == (1, 1):
            raise ValueError(
                f"ObservationEncoder: crop_shape {crop_shape} gives a 1x1 ResNet feature map, so "
                f"the spatial-softmax keypoints would be constant and ignore the image; use "
                f"crops (or images) larger than 32 pixels in at least one dimension"
            )
        self.n_cameras = n_cameras
        self.image_shape: tuple[int, int, int] = image_shape  # type: ignore[assignment]
        self.crop_shape: tuple[int, int] = crop_shape  # type: ignore[assignment]
        self.state_dim = state_dim
        self.num_keypoints = num_keypoints
        self.share_encoder = share_encoder
        # Per step [state, cameras...] instead of [cameras..., state] (LeRobot's order).
        self.state_first = state_first
        n_encoders = 1 if share_encoder else n_cameras
        self.encoders = nn.ModuleList(
            [
                _CameraEncoder(self.crop_shape, num_keypoints, encoder_width, backbone_norm)
                for _ in range(n_encoders)
            ]
        )
        # Optional generator for the training-time crops (None: torch's global RNG).
        self.crop_generator: torch.Generator | None = None
        # Inference-only replacements for the per-camera modules (e.g. TorchScript-frozen copies,
        # see DiffusionPolicy.enable_acceleration); a plain attribute, so not in the state_dict.
        self.camera_runners: list[Callable[[Tensor], Tensor]] | None = None

    @property
    def feature_dim_per_step(self) -> int:
        """Features per observation step: N·2K + state_dim."""
        return self.n_cameras * 2 * self.num_keypoints + self.state_dim

    def output_dim(self, n_obs_steps: int) -> int:
        """Size of the global condition for ``n_obs_steps`` frames."""
        return n_obs_steps * self.feature_dim_per_step

    def preprocess(self, images: Tensor) -> Tensor:
        """(B, T, N, 3, H, W) -> (B·T·N, 3, h, w) float in [0, 1], cropped for the current mode."""
        self._check_images(images)
        return self._prepare(images.flatten(0, 2))

    def _prepare(self, x: Tensor) -> Tensor:
        """(M, 3, H, W) uint8 or float -> (M, 3, h, w) in the encoder's dtype, cropped."""
        # Compute in the encoder's parameter dtype (float32, or bf16/fp16 for reduced precision).
        dtype = self.encoders[0].backbone.conv1.weight.dtype
        x = x.to(dtype) / 255.0 if x.dtype == torch.uint8 else x.to(dtype)
        return crop_images(x, self.crop_shape, random=self.training, generator=self.crop_generator)

    def forward(self, images: Tensor, state: Tensor) -> Tensor:
        """images (B, T, N, 3, H, W), state (B, T, state_dim) -> (B, T·(N·2K + state_dim))."""
        self._check_images(images)
        B, T = images.shape[:2]
        expected_state = (B, T, self.state_dim)
        if tuple(state.shape) != expected_state:
            raise ValueError(
                f"ObservationEncoder: state must have shape {expected_state} (batch and steps of "
                f"the images, state_dim={self.state_dim}), got {tuple(state.shape)}"
            )
        return self.combine(self.image_features(images), state)

    def _runners(self) -> Sequence[Callable[[Tensor], Tensor]]:
        return self.encoders if self.training or not self.camera_runners else self.camera_runners

    def image_features(self, images: Tensor) -> Tensor:
        """images (B, T, N, 3, H, W) -> (B, T, N·2K) keypoint features, cameras in order."""
        self._check_images(images)
        B, T, N = images.shape[:3]
        x = self.preprocess(images)  # (B·T·N, 3, h, w)
        runners = self._runners()
        if self.share_encoder:
            feats = runners[0](x).reshape(B * T, N * 2 * self.num_keypoints)
        else:
            x = x.unflatten(0, (B * T, N))
            feats = torch.cat([run(x[:, i]) for i, run in enumerate(runners)], dim=-1)
        return feats.reshape(B, T, N * 2 * self.num_keypoints)

    def camera_features(self, camera: int, images: Tensor) -> Tensor:
        """images (M, 3, H, W) of camera `camera` -> (M, 2K): what `image_features` computes
        for that camera's slice (the streaming encoder's per-frame step, eval mode)."""
        if not 0 <= camera < self.n_cameras:
            raise ValueError(f"camera index {camera} out of range (n_cameras {self.n_cameras})")
        if images.ndim != 4 or tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(
                f"ObservationEncoder: camera frames must have shape (M, "
                f"{', '.join(map(str, self.image_shape))}), got {tuple(images.shape)}"
            )
        x = self._prepare(images)  # (M, 3, h, w)
        runners = self._runners()
        return runners[0 if self.share_encoder else camera](x)

    def combine(self, features: Tensor, state: Tensor) -> Tensor:
        """features (B, T, N·2K), state (B, T, state_dim) -> (B, T·(N·2K + state_dim)) in the
        state's dtype (the ε-network's; the encoders may compute in another)."""
        B, T = features.shape[:2]
        parts = [features.to(state.dtype), state]
        feats = torch.cat(parts[::-1] if self.state_first else parts, dim=-1)
        return feats.reshape(B, T * self.feature_dim_per_step)

    def _check_images(self, images: Tensor) -> None:
        expected = f"(B, T, {self.n_cameras}, {', '.join(map(str, self.image_shape))})"
        if (
            images.ndim != 6
            or images.shape[2] != self.n_cameras
            or tuple(images.shape[3:]) != self.image_shape
        ):
            raise ValueError(
                f"ObservationEncoder: images must have shape {expected} "
                f"(batch, obs steps, cameras, channels, height, width), "
                f"got {tuple(images.shape)}"
            )
        if images.dtype != torch.uint8 and not images.is_floating_point():
            raise ValueError(
                f"ObservationEncoder: images must be uint8 or float in [0, 1], got {images.dtype}"
            )
