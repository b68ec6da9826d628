"""Hostile and awkward upload files, generated in memory by the tests (no binaries checked in).

Each generator returns bytes. They fall in three groups:
- valid but unusual images that must be processed to `done` (CMYK, 16-bit, palette, alpha, grey);
- broken or lying images that must be rejected at upload or end `failed` with a readable error;
- hostile zips: bombs, zip-slip names, nesting, junk members.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def encode(img: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


def noise_image(width: int = 320, height: int = 240, seed: int = 0) -> Image.Image:
    """Random pixels: they compress badly, so truncating the file really cuts into scan data."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


def noise_jpeg(width: int = 320, height: int = 240, seed: int = 0) -> bytes:
    return encode(noise_image(width, height, seed), "JPEG", quality=90)


# --- valid images in unusual modes: all must be processed to `done` ---

def unusual_modes(base: Image.Image) -> dict[str, bytes]:
    """`base` (an RGB photo, ideally with a face) re-encoded in every colour mode we accept."""
    rgb = base.convert("RGB")
    grey = rgb.convert("L")
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgb.size))  # partly transparent
    # 16-bit greyscale uses the full 0..65535 range, as scanners and some cameras write it
    grey16 = Image.fromarray((np.asarray(grey, dtype=np.uint16) * 257).astype(np.uint16))
    return {
        "cmyk.jpg": encode(rgb.convert("CMYK"), "JPEG", quality=92),
        "grey.jpg": encode(grey, "JPEG", quality=92),
        "grey.png": encode(grey, "PNG"),
        "grey16.png": encode(grey16, "PNG"),
        "palette.png": encode(rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=256), "PNG"),
        "alpha.png": encode(rgba, "PNG"),
        "grey-alpha.png": encode(rgba.convert("LA"), "PNG"),
        "progressive.jpg": encode(rgb, "JPEG", quality=92, progressive=True),
    }


# --- broken or lying images ---

def truncated_jpeg(keep: float = 0.5, seed: int = 0) -> bytes:
    """Header intact, scan data cut off: accepted at upload, fails in the worker as corrupt."""
    data = noise_jpeg(seed=seed)
    return data[: int(len(data) * keep)]


def broken_header_jpeg() -> bytes:
    """JPEG magic followed by garbage: no frame header, so nothing can even read its size."""
    return b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8


def not_an_image(kind: str = "text") -> bytes:
    """Files people name .jpg that are something else."""
    return {
        "text": b"this is not a photo\n" * 50,
        "html": b"<!doctype html><html><body><script>alert(1)</script></body></html>",
        "pdf": b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n",
        "zeros": b"\x00" * 4096,
        "elf": b"\x7fELF\x02\x01\x01" + b"\x00" * 500,
    }[kind]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims `width`x`height` but whose data is a few bytes (absurd dimensions)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _png_chunk(b"IEND", b""))


def png_decompression_bomb(width: int = 20_000, height: int = 20_000) -> bytes:
    """A complete, valid 1-bit PNG of width*height pixels, all black: tens of kB that decode to GBs."""
    row = b"\x00" + b"\x00" * ((width + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    parts = [compressor.compress(row * 1000) for _ in range(height // 1000)]
    parts.append(compressor.compress(row * (height % 1000)))
    parts.append(compressor.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", b"".join(parts)) + _png_chunk(b"IEND", b""))


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small real JPEG whose frame header (SOF0) is patched to claim `width`x`height`."""
    data = bytearray(noise_jpeg(64, 48))
    sof = data.find(b"\xff\xc0")
    assert sof > 0, "baseline JPEG expected"
    struct.pack_into(">HH", data, sof + 5, height, width)  # marker(2) len(2) precision(1) H W
    return bytes(data)


# --- zips ---

def make_zip(members: dict[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip with the given member names taken literally (zipfile would keep '../' as written)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=(2026, 4, 26, 9, 0, 0))
            info.compress_type = compression
            if name.endswith("/"):
                info.external_attr = 0o40755 << 16 | 0x10  # a directory entry
            archive.writestr(info, data)
    return buf.getvalue()


def zip_bomb(uncompressed_bytes: int, name: str = "bomb.jpg") -> bytes:
    """One member of zeros behind a JPEG header: compresses about 1000:1."""
    payload = b"\xff\xd8\xff\xe0" + b"\x00" * (uncompressed_bytes - 4)
    return make_zip({name: payload})


def zip_slip(target_inside: Path, photo: bytes) -> bytes:
    """Members whose names try to escape an extraction folder; `target_inside` is an absolute path
    the test owns (never a real system file: the tests run as root on CI)."""
    return make_zip({
        "../../escaped.jpg": photo,
        "../../../../../../escaped-deep.jpg": noise_jpeg(seed=11),
        str(target_inside): noise_jpeg(seed=12),
        "..\\..\\windows-escape.jpg": noise_jpeg(seed=13),
        "ok/../../../inner-escape.jpg": noise_jpeg(seed=14),
    })


def nested_zip(photo: bytes) -> bytes:
    inner = make_zip({"inner.jpg": photo})
    return make_zip({"inner.zip": inner, "outer.jpg": noise_jpeg(seed=21)})


def junk_zip(photo: bytes) -> bytes:
    """What real zips carry beside photos: folders, macOS resource forks, dot-files, empty files."""
    return make_zip({
        "race/": b"",
        "race/km10/": b"",
        "race/km10/runner.jpg": photo,
        "__MACOSX/race/km10/._runner.jpg": b"\x00\x05\x16\x07" + b"\x00" * 200,
        ".DS_Store": b"\x00\x00\x00\x01Bud1" + b"\x00" * 100,
        "race/.hidden.jpg": noise_jpeg(seed=31),
        "race/empty.jpg": b"",
    })


def same_names_zip() -> bytes:
    """Two different photos with the same base name in different folders."""
    return make_zip({"a/IMG_0001.jpg": noise_jpeg(seed=41), "b/IMG_0001.jpg": noise_jpeg(seed=42)})


def zip_lying_sizes(payload: bytes, claimed_size: int, name: str = "liar.jpg") -> bytes:
    """A zip whose headers claim `claimed_size` uncompressed bytes for a member that really
    inflates to len(payload): size checks that trust the headers alone would be fooled."""
    data = bytearray(make_zip({name: payload}))
    local = data.find(b"PK\x03\x04")
    struct.pack_into("<I", data, local + 22, claimed_size)  # local header: uncompressed size
    central = data.find(b"PK\x01\x02")
    struct.pack_into("<I", data, central + 24, claimed_size)  # central directory: uncompressed size
    return bytes(data)


def many_entries_zip(count: int) -> bytes:
    """Lots of tiny members: bounded by the entry limit, answered with one rejection, not `count`."""
    return make_zip({f"f{n}.jpg": b"\xff\xd8\xff" for n in range(count)}, compression=zipfile.ZIP_STORED)


def long_names_zip(count: int, name_length: int = 60_000) -> bytes:
    """Few entries, each named by tens of KB: a central directory far larger than its entry count needs."""
    return make_zip({f"{n}-" + "x" * name_length + ".jpg": b"\xff\xd8\xff" for n in range(count)},
                    compression=zipfile.ZIP_STORED)


def half_compressible(size: int, seed: int = 0) -> bytes:
    """`size` bytes behind a JPEG magic that deflate halves (16 symbols): a zip of these expands
    to about twice its own size, far below any bomb ratio."""
    rng = np.random.default_rng(seed)
    return b"\xff\xd8\xff" + rng.integers(0, 16, size - 3, dtype=np.uint8).tobytes()
