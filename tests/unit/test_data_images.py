"""Image decoding (raw encodings with row padding, jpeg/png) and the shared resize."""

import cv2
import numpy as np
import pytest

from diffusion_policy_node.data.images import (
    ImageDecodeError,
    decode_compressed_image,
    decode_raw_image,
    resize_image,
)

WHERE = "bag demo topic /camera/image_raw message 17"


def ramp(h: int = 5, w: int = 7) -> np.ndarray:
    return (np.arange(h * w * 3) * 5 % 256).astype(np.uint8).reshape(h, w, 3)


def padded(pixels: np.ndarray, pad: int = 5) -> tuple[int, bytes]:
    """Rows with `pad` garbage bytes at the end, as drivers with aligned rows publish them."""
    h = pixels.shape[0]
    row = pixels.reshape(h, -1)
    data = np.full((h, row.shape[1] + pad), 255, np.uint8)
    data[:, : row.shape[1]] = row
    return data.shape[1], data.tobytes()


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_colour_encodings_decode_to_rgb_honouring_step(encoding):
    rgb = ramp()
    alpha = np.full((*rgb.shape[:2], 1), 9, np.uint8)
    pixels = {
        "rgb8": rgb,
        "bgr8": rgb[:, :, ::-1],
        "rgba8": np.concatenate([rgb, alpha], axis=2),
        "bgra8": np.concatenate([rgb[:, :, ::-1], alpha], axis=2),
    }[encoding]
    step, data = padded(pixels)
    out = decode_raw_image(encoding, 5, 7, step, data, WHERE)
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, rgb)
    # ndarray payloads (what rosbags deserializes to) work the same way.
    as_array = np.frombuffer(data, np.uint8)
    np.testing.assert_array_equal(decode_raw_image(encoding, 5, 7, step, as_array, WHERE), rgb)


def test_mono8_becomes_three_equal_channels():
    grey = ramp()[:, :, :1]
    step, data = padded(grey, pad=3)
    out = decode_raw_image("mono8", 5, 7, step, data, WHERE)
    np.testing.assert_array_equal(out, np.repeat(grey, 3, axis=2))


def test_unsupported_encoding_names_where_and_the_alternatives():
    with pytest.raises(ImageDecodeError) as err:
        decode_raw_image("yuv422", 4, 4, 8, bytes(32), WHERE)
    msg = str(err.value)
    assert WHERE in msg and "yuv422" in msg and "rgb8" in msg and "encoding" in msg
    assert isinstance(err.value, ValueError)


def test_inconsistent_sizes_are_errors():
    with pytest.raises(ImageDecodeError, match="truncated"):
        decode_raw_image("rgb8", 4, 4, 12, bytes(40), WHERE)
    with pytest.raises(ImageDecodeError, match="step=10"):
        decode_raw_image("rgb8", 4, 4, 10, bytes(48), WHERE)
    with pytest.raises(ImageDecodeError, match="height=0"):
        decode_raw_image("rgb8", 0, 4, 12, b"", WHERE)


def test_png_round_trip_is_exact_and_jpeg_is_close():
    rgb = np.zeros((24, 32, 3), np.uint8)
    rgb[..., 0] = np.linspace(0, 255, 32, dtype=np.uint8)[None, :]
    rgb[..., 1] = np.linspace(0, 255, 24, dtype=np.uint8)[:, None]
    rgb[..., 2] = 77
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    _, png = cv2.imencode(".png", bgr)
    np.testing.assert_array_equal(decode_compressed_image("png", png.tobytes(), WHERE), rgb)
    _, jpg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
    out = decode_compressed_image("rgb8; jpeg compressed bgr8", jpg, WHERE)
    assert out.shape == rgb.shape
    assert np.abs(out.astype(int) - rgb).mean() < 3.0
    # Channel order: red stays red.
    assert out[12, 31, 0] > 240 and out[12, 0, 0] < 15


def test_grey_png_comes_back_as_three_channels():
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8)
    _, png = cv2.imencode(".png", grey)
    out = decode_compressed_image("mono8; png compressed mono8", png, WHERE)
    np.testing.assert_array_equal(out, np.repeat(grey[:, :, None], 3, axis=2))


def test_bad_compressed_payloads_are_errors_naming_where():
    with pytest.raises(ImageDecodeError, match="depth") as err:
        decode_compressed_image("16UC1; compressedDepth", b"\x00" * 16, WHERE)
    assert WHERE in str(err.value)
    with pytest.raises(ImageDecodeError, match="cannot decode") as err:
        decode_compressed_image("jpeg", b"not an image at all", WHERE)
    assert WHERE in str(err.value)
    with pytest.raises(ImageDecodeError, match="no data"):
        decode_compressed_image("jpeg", b"", WHERE)


def test_shrinking_averages_pixel_blocks():
    # INTER_AREA with an integer factor is the mean of each 2x2 block.
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[:2, :2] = [0, 40, 80]
    rgb[0, 0] = [8, 48, 88]  # top-left block mean: (8 + 3 * 0) / 4 = 2, 42, 82
    rgb[2:, 2:] = 200
    rgb[2, :2] = 10  # bottom-left block: two pixels of 10, two of 30: mean 20
    rgb[3, :2] = 30
    out = resize_image(rgb, (2, 2))
    expected = np.array(
        [[[2, 42, 82], [0, 0, 0]], [[20, 20, 20], [200, 200, 200]]],
        np.uint8,
    )
    np.testing.assert_array_equal(out, expected)


def test_resize_identity_enlarge_and_aspect():
    rgb = ramp(6, 6)
    np.testing.assert_array_equal(resize_image(rgb, (6, 6)), rgb)
    big = resize_image(rgb, (12, 12))
    np.testing.assert_array_equal(big, cv2.resize(rgb, (12, 12), interpolation=cv2.INTER_LINEAR))
    wide = np.full((30, 50, 3), 123, np.uint8)
    out = resize_image(wide, (16, 20))
    assert out.shape == (16, 20, 3) and out.dtype == np.uint8 and np.all(out == 123)
    with pytest.raises(ValueError, match="size"):
        resize_image(rgb, (0, 4))
    with pytest.raises(ValueError, match="shape"):
        resize_image(rgb[:, :, 0], (3, 3))
