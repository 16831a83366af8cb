"""Image decoding and resizing shared by the bag reader (training) and the ROS node (serving).

ROS-free (numpy + OpenCV only). Every image the policy sees, at training time and at run time,
goes through `decode_raw_image` / `decode_compressed_image` and then `resize_image`, so the two
paths cannot drift apart. Outputs are always `(H, W, 3)` uint8 RGB, C-contiguous.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = [
    "SUPPORTED_ENCODINGS",
    "ImageDecodeError",
    "check_raw_encoding",
    "decode_compressed_image",
    "decode_raw_image",
    "resize_image",
]

# sensor_msgs/Image encodings we decode: name -> (channels, index order to get RGB or None).
_RAW_LAYOUTS: dict[str, tuple[int, tuple[int, ...] | None]] = {
    "rgb8": (3, None),
    "bgr8": (3, (2, 1, 0)),
    "rgba8": (4, (0, 1, 2)),
    "bgra8": (4, (2, 1, 0)),
    "mono8": (1, None),
}
SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_RAW_LAYOUTS)


class ImageDecodeError(ValueError):
    """An image message cannot be turned into RGB; the message names where and what to do."""


def _as_bytes_array(data: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8) if data.dtype != np.uint8 else data.reshape(-1)
    return np.frombuffer(data, dtype=np.uint8)


def check_raw_encoding(encoding: str, where: str) -> str:
    """Return `encoding` if `decode_raw_image` supports it, else raise ImageDecodeError."""
    if encoding not in _RAW_LAYOUTS:
        raise ImageDecodeError(
            f"{where} field encoding: unsupported image encoding {encoding!r}; supported: "
            f"{', '.join(SUPPORTED_ENCODINGS)}. Record the camera in one of these (e.g. set the "
            "driver's pixel format to rgb8) or use a sensor_msgs/CompressedImage topic."
        )
    return encoding


def decode_raw_image(
    encoding: str,
    height: int,
    width: int,
    step: int,
    data: bytes | bytearray | memoryview | np.ndarray,
    where: str,
) -> np.ndarray:
    """Decode the fields of a `sensor_msgs/Image` to `(height, width, 3)` uint8 RGB.

    Supports rgb8, bgr8, rgba8, bgra8 (alpha dropped) and mono8 (grey repeated to 3 channels).
    `step` is the row length in bytes and may include padding at the end of each row.
    `where` names the message in errors (e.g. "bag X topic /camera/image_raw message 17").
    """
    channels, order = _RAW_LAYOUTS[check_raw_encoding(encoding, where)]
    if height <= 0 or width <= 0:
        raise ImageDecodeError(
            f"{where}: image has height={height}, width={width}; both must be > 0. "
            "The camera published an empty frame: drop it or re-record."
        )
    row_bytes = width * channels
    if step < row_bytes:
        raise ImageDecodeError(
            f"{where}: step={step} is smaller than width*channels={row_bytes} for {encoding!r} "
            f"({height}x{width}); the message is inconsistent: check the camera driver."
        )
    buf = _as_bytes_array(data)
    # The last row may omit its padding; anything shorter than that is truncated.
    needed = step * (height - 1) + row_bytes
    if buf.size < needed:
        raise ImageDecodeError(
            f"{where}: data has {buf.size} bytes but {encoding!r} {height}x{width} with "
            f"step={step} needs at least {needed}; the message is truncated or its fields are "
            "wrong: check the camera driver."
        )
    if buf.size < step * height:
        buf = np.concatenate([buf[:needed], np.zeros(step * height - needed, np.uint8)])
    rows = buf[: step * height].reshape(height, step)[:, :row_bytes]
    pixels = rows.reshape(height, width, channels)
    if channels == 1:
        rgb = np.repeat(pixels, 3, axis=2)
    elif order is None:
        rgb = pixels
    else:
        rgb = pixels[:, :, list(order)]
    return np.ascontiguousarray(rgb, dtype=np.uint8)


def decode_compressed_image(
    format: str,
    data: bytes | bytearray | memoryview | np.ndarray,
    where: str,
) -> np.ndarray:
    """Decode a `sensor_msgs/CompressedImage` (jpeg or png) to `(H, W, 3)` uint8 RGB.

    `format` is the message's format string, e.g. "jpeg", "png" or image_transport's
    "rgb8; jpeg compressed bgr8"; the payload itself decides how it is decoded. Grey images
    come back as 3 equal channels. Depth streams ("compressedDepth") are refused.
    """
    fmt = format.lower()
    if "compresseddepth" in fmt or "16u" in fmt or "32f" in fmt:
        raise ImageDecodeError(
            f"{where}: compressed format {format!r} is a depth/16-bit stream; only 8-bit colour "
            "or grey jpeg/png images are supported. Configure a colour camera topic instead."
        )
    buf = _as_bytes_array(data)
    if buf.size == 0:
        raise ImageDecodeError(
            f"{where}: compressed image ({format!r}) has no data; drop the message or re-record."
        )
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageDecodeError(
            f"{where}: OpenCV cannot decode the {buf.size}-byte compressed image with format "
            f"{format!r}; only jpeg and png are supported. The payload may be corrupt."
        )
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def resize_image(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an `(h, w, 3)` uint8 image to `size = (H, W)` without keeping the aspect ratio.

    Shrinking (H <= h and W <= w) uses `cv2.INTER_AREA`, which averages the source pixels each
    output pixel covers (no aliasing); anything that enlarges an axis uses `cv2.INTER_LINEAR`.
    An image that already has the target size is returned unchanged (as a contiguous array).
    """
    out_h, out_w = int(size[0]), int(size[1])
    if out_h <= 0 or out_w <= 0:
        raise ValueError(f"resize_image: size must be positive (H, W), got {size!r}")
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"resize_image: expected an (h, w, 3) image, got shape {rgb.shape}")
    h, w = rgb.shape[:2]
    if (h, w) == (out_h, out_w):
        return np.ascontiguousarray(rgb)
    interp = cv2.INTER_AREA if out_h <= h and out_w <= w else cv2.INTER_LINEAR
    return np.ascontiguousarray(cv2.resize(rgb, (out_w, out_h), interpolation=interp))
