"""Test images built from the real photos in ../shared/faces (never copied into the repo)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from PIL import Image


def identity_photo(faces_dir: Path, name: str, n: int) -> Path:
    return faces_dir / "identities" / name / f"{n}.jpg"


def identities(faces_dir: Path) -> list[str]:
    return sorted(p.name for p in (faces_dir / "identities").iterdir() if p.is_dir())


def as_png(path: Path) -> bytes:
    out = io.BytesIO()
    Image.open(path).save(out, "PNG")
    return out.getvalue()


def make_zip(entries: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            if name.endswith("/"):
                archive.writestr(zipfile.ZipInfo(name), b"")
            else:
                archive.writestr(name, data)
    return out.getvalue()


def noise_jpeg(seed: int = 0, size: tuple[int, int] = (320, 240)) -> bytes:
    """A real JPEG of random pixels (no face in it), different for each seed."""
    import io

    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90)
    return out.getvalue()
