"""Decode uploaded photos into upright RGB images, and render previews.

Every decode failure is an `ImageDecodeError` with a stable `code`:
- `not_an_image`: the bytes are not a supported image format;
- `corrupt_image`: the format is known but the data is truncated or broken;
- `image_too_large`: more pixels than the caller allows (checked from the header, before decoding).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

# Pillow's default, set explicitly: a truncated upload must fail, not decode into grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False

# Limiting formats keeps rarely used decoders away from uploads (JPEG also opens cameras' MPO files).
FORMATS = ("JPEG", "PNG", "WEBP", "AVIF", "TIFF", "BMP", "GIF")
Image.init()  # registers every plugin, so `formats=` can name them all
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"II*\x00", b"MM\x00*", b"BM")
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError)


class ImageDecodeError(ValueError):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


def decode_image(source: bytes | Path, *, max_pixels: int) -> Image.Image:
    """Full-resolution RGB image, EXIF orientation applied."""
    img = _open(source, max_pixels=max_pixels)
    return _finish(img)


def downscale(img: Image.Image, long_side: int) -> tuple[Image.Image, float]:
    """A copy with the long side at most `long_side` (never upscaled) and the factor original/new."""
    w, h = img.size
    if max(w, h) <= long_side:
        return img, 1.0
    factor = max(w, h) / long_side
    size = (max(1, round(w / factor)), max(1, round(h / factor)))
    return img.resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0), factor


def shrink_array(array: np.ndarray, long_side: int, interpolation: int = cv2.INTER_AREA) -> tuple[np.ndarray, float]:
    """`downscale` for arrays, with area averaging by default (OpenCV: several times faster than Pillow's)."""
    h, w = array.shape[:2]
    if max(w, h) <= long_side:
        return array, 1.0
    factor = max(w, h) / long_side
    size = (max(1, round(w / factor)), max(1, round(h / factor)))
    return cv2.resize(array, size, interpolation=interpolation), factor


def detection_image(img: Image.Image, long_side: int) -> tuple[np.ndarray, float]:
    """What the face detector sees: `img` as an array with its long side at most `long_side`, and
    the factor back to `img`'s pixels.

    Pillow's `reduce` first averages whole blocks (a 6000 px photo: 3x3, to 2000 px) in one cheap
    pass, then a bilinear step takes the rest, under 1.5x after a block average, so it aliases
    nothing a detector would see; without a block step OpenCV's area filter does it all. It costs
    under a quarter of an area shrink of the whole photo (42 against 182 ms at 24 MP), and against
    the 1/2 JPEG draft plus area shrink that detection used to run on, recall and false matches
    are the same (bench/calibrate.py --race, four layouts).
    """
    block = max(1, max(img.size) // long_side)
    if block == 1:
        return shrink_array(to_array(img), long_side)
    array, _ = shrink_array(to_array(img.reduce(block)), long_side, cv2.INTER_LINEAR)
    return array, max(img.size) / max(array.shape[:2])


def render_jpeg(img: Image.Image, long_side: int, quality: int = 85) -> bytes:
    """JPEG bytes for galleries (~1600) and thumbnails (~400); metadata such as GPS is not copied."""
    small, _ = downscale(img, long_side)
    buf = io.BytesIO()
    small.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def to_array(img: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB array, the input the face backends take."""
    return np.asarray(img if img.mode == "RGB" else img.convert("RGB"), dtype=np.uint8)  # one copy, not two


def _open(source: bytes | Path, *, max_pixels: int) -> Image.Image:
    fp = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source
    try:
        # We apply our own `max_pixels`; Pillow's global limit would only warn or fail differently.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(fp, formats=FORMATS)
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError("image_too_large", str(exc)) from exc
    except UnidentifiedImageError as exc:
        if _has_image_signature(source):
            raise ImageDecodeError("corrupt_image", "image signature but unreadable header") from exc
        raise ImageDecodeError("not_an_image", "not a JPEG, PNG, WebP, AVIF, TIFF, BMP or GIF image") from exc
    except _DECODE_ERRORS as exc:
        raise ImageDecodeError("corrupt_image", f"unreadable header: {exc}") from exc
    w, h = img.size
    if w <= 0 or h <= 0:
        raise ImageDecodeError("corrupt_image", f"invalid size {w}x{h}")
    if w * h > max_pixels:
        raise ImageDecodeError("image_too_large", f"{w}x{h} is over the limit of {max_pixels} pixels")
    return img


def _has_image_signature(source: bytes | Path) -> bool:
    if isinstance(source, Path):
        with source.open("rb") as fh:
            head = fh.read(16)
    else:
        head = bytes(source[:16])
    webp = head[:4] == b"RIFF" and head[8:12] == b"WEBP"
    return webp or head[4:8] == b"ftyp" or head.startswith(_SIGNATURES)


def _finish(img: Image.Image) -> Image.Image:
    try:
        img.load()  # decode everything now so truncation surfaces here, not in a later resize
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError("image_too_large", str(exc)) from exc
    except _DECODE_ERRORS as exc:
        raise ImageDecodeError("corrupt_image", f"broken image data: {exc}") from exc
    img = _upright(img)
    try:
        return _to_rgb(img)
    except ValueError as exc:
        raise ImageDecodeError("not_an_image", f"unsupported colour mode {img.mode}") from exc


def _upright(img: Image.Image) -> Image.Image:
    # In place: without it Pillow copies every photo, upright or not (25 ms for 24 MP).
    try:
        ImageOps.exif_transpose(img, in_place=True)
    except Exception:  # noqa: BLE001 - broken EXIF should not lose the photo; keep it as stored
        pass
    return img


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return Image.fromarray(_to_uint8(np.asarray(img))).convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, P, CMYK, YCbCr


def _to_uint8(values: np.ndarray) -> np.ndarray:
    # 16-bit greyscale PNG/TIFF: Pillow's own convert would clip everything above 255 to white.
    if values.dtype.kind == "f":
        peak = 1.0 if values.max(initial=0) <= 1.0 else 255.0
        return np.clip(values / peak * 255.0, 0, 255).astype(np.uint8)
    scale = 257 if values.max(initial=0) > 255 or values.dtype.itemsize == 2 else 1
    return np.clip(values // scale, 0, 255).astype(np.uint8)
