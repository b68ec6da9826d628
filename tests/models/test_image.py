"""Decoding uploads: colour modes, EXIF orientation, and every failure mapped to a stable code."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from models.image import ImageDecodeError, decode_image, detection_image, downscale, render_jpeg

BIG = 10_000_000


def encode(img: Image.Image, fmt: str, **params) -> bytes:  # type: ignore[no-untyped-def]
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


def photo_bytes() -> bytes:
    """A JPEG with real structure (noise compresses badly, so truncation hits scan data)."""
    rng = np.random.default_rng(1)
    return encode(Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)), "JPEG", quality=90)


def code_of(data: bytes, max_pixels: int = BIG) -> str:
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data, max_pixels=max_pixels)
    return info.value.code


def test_rgb_jpeg_from_bytes_and_path(tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = photo_bytes()
    (tmp_path / "a.jpg").write_bytes(data)
    for source in (data, tmp_path / "a.jpg"):
        img = decode_image(source, max_pixels=BIG)
        assert img.mode == "RGB" and img.size == (400, 300)


@pytest.mark.parametrize("data", [b"", b"hello world", b"%PDF-1.7\n" + b"x" * 200, b"\x00" * 1000])
def test_non_images_are_not_an_image(data: bytes) -> None:
    assert code_of(data) == "not_an_image"


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.95])
def test_truncated_jpeg_is_corrupt_not_grey(keep: float) -> None:
    data = photo_bytes()
    assert code_of(data[: int(len(data) * keep)]) == "corrupt_image"


@pytest.mark.parametrize("keep", [4, 20, 100])
def test_image_signature_with_broken_header_is_corrupt(keep: int) -> None:
    assert code_of(photo_bytes()[:keep] + b"\x00garbage" * 10) == "corrupt_image"
    png = encode(Image.fromarray(np.random.default_rng(3).integers(0, 255, (64, 64, 3), dtype=np.uint8)), "PNG")
    assert code_of(png[:keep]) == "corrupt_image"


def test_truncated_png_is_corrupt() -> None:
    data = encode(Image.fromarray(np.random.default_rng(2).integers(0, 255, (200, 200, 3), dtype=np.uint8)), "PNG")
    assert code_of(data[: len(data) // 2]) == "corrupt_image"


def test_too_many_pixels_checked_before_decoding() -> None:
    data = photo_bytes()
    assert code_of(data, max_pixels=400 * 300 - 1) == "image_too_large"
    assert decode_image(data, max_pixels=400 * 300).size == (400, 300)


def test_pillow_decompression_bomb_becomes_too_large(monkeypatch: pytest.MonkeyPatch) -> None:
    # Pillow raises its own error past twice its global limit; that must not escape as a crash.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    assert code_of(photo_bytes(), max_pixels=BIG) == "image_too_large"


def test_colour_modes_become_rgb() -> None:
    cmyk = encode(Image.new("CMYK", (20, 10), (0, 255, 0, 0)), "JPEG", quality=100)
    assert tuple(np.asarray(decode_image(cmyk, max_pixels=BIG))[5, 5]) == pytest.approx((255, 0, 255), abs=3)

    grey = encode(Image.new("L", (20, 10), 77), "PNG")
    assert tuple(np.asarray(decode_image(grey, max_pixels=BIG))[5, 5]) == (77, 77, 77)

    deep = np.full((10, 20), 40000, np.uint16)  # 16-bit: 40000/65535 of full scale, not clipped white
    img16 = decode_image(encode(Image.fromarray(deep), "PNG"), max_pixels=BIG)
    assert img16.mode == "RGB" and np.asarray(img16)[5, 5, 0] == 40000 // 257

    palette = Image.new("P", (20, 10), 1)
    palette.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    assert tuple(np.asarray(decode_image(encode(palette, "PNG"), max_pixels=BIG))[5, 5]) == (10, 200, 30)


def test_transparency_is_composited_on_white() -> None:
    rgba = Image.new("RGBA", (20, 10), (200, 0, 0, 0))
    rgba.putpixel((0, 0), (200, 0, 0, 255))
    out = np.asarray(decode_image(encode(rgba, "PNG"), max_pixels=BIG))
    assert tuple(out[5, 5]) == (255, 255, 255) and tuple(out[0, 0]) == (200, 0, 0)

    gif = Image.new("P", (20, 10), 3)
    assert tuple(np.asarray(decode_image(encode(gif, "GIF", transparency=3), max_pixels=BIG))[5, 5]) == (255, 255, 255)


@pytest.mark.parametrize("orientation, expected_size", [(6, (30, 40)), (8, (30, 40)), (3, (40, 30)), (1, (40, 30))])
def test_exif_orientation_is_applied(orientation: int, expected_size: tuple[int, int]) -> None:
    img = Image.new("RGB", (40, 30), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 10, 10))  # a red mark in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = decode_image(encode(img, "JPEG", quality=95, exif=exif), max_pixels=BIG)
    assert out.size == expected_size
    corner = {1: (2, 2), 3: (37, 27), 6: (27, 2), 8: (2, 37)}[orientation]  # where the mark lands
    assert np.asarray(out)[corner[1], corner[0], 0] > 200


def test_downscale_never_upscales_and_reports_factor() -> None:
    img = Image.new("RGB", (3000, 2000))
    small, factor = downscale(img, 1500)
    assert small.size == (1500, 1000) and factor == 2.0
    same, factor = downscale(img, 4000)
    assert same is img and factor == 1.0


def test_detection_image_is_the_photo_shrunk_to_the_long_side_with_the_factor_back() -> None:
    img = Image.new("RGB", (6000, 4000), (10, 20, 30))
    img.paste((250, 250, 250), (3000, 2000, 3600, 2400))  # a bright block to find again
    array, factor = detection_image(img, 1600)
    assert array.shape == (1067, 1600, 3) and array.dtype == np.uint8 and factor == pytest.approx(6000 / 1600)
    ys, xs = np.nonzero(array[:, :, 0] > 200)
    assert xs.min() * factor == pytest.approx(3000, abs=2 * factor) and ys.max() * factor == pytest.approx(2400, abs=2 * factor)
    small = Image.new("RGB", (1200, 900))
    array, factor = detection_image(small, 1600)  # never enlarged
    assert array.shape == (900, 1200, 3) and factor == 1.0


def test_render_jpeg_sizes() -> None:
    img = Image.new("RGB", (3000, 2000), (90, 90, 90))
    preview = Image.open(io.BytesIO(render_jpeg(img, 1600)))
    assert preview.format == "JPEG" and preview.size == (1600, 1067)
    tiny = Image.new("RGB", (300, 200))
    assert Image.open(io.BytesIO(render_jpeg(tiny, 400))).size == (300, 200)  # never upscaled
