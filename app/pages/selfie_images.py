"""Small images the selfie form shows back: the kept selfie and one crop per face found.

They travel inside the page as data: URIs (the CSP allows `img-src data:`), so the selfie is
never written to storage, in line with the retention promise in app/services/runners.py.
"""

from __future__ import annotations

import base64
import io

from PIL import Image, ImageOps

# A selfie the browser shrank is a few hundred KB; keep larger ones out of the page.
KEEP_MAX_BYTES = 4 * 2**20


def _open(data: bytes) -> Image.Image | None:
    try:
        with Image.open(io.BytesIO(data), formats=["JPEG", "PNG", "WEBP"]) as img:
            img.draft("RGB", (1600, 1600))
            return ImageOps.exif_transpose(img).convert("RGB")
    except Exception:  # anything unreadable simply has no preview
        return None


def _data_uri(img: Image.Image) -> str:
    out = io.BytesIO()
    img.save(out, "JPEG", quality=82)
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode()


def kept_selfie(data: bytes) -> dict | None:
    """The selfie as a hidden form value plus a preview, or None when too large or unreadable."""
    if not data or len(data) > KEEP_MAX_BYTES:
        return None
    img = _open(data)
    if img is None:
        return None
    img.thumbnail((640, 640))
    return {"data": base64.b64encode(data).decode(), "preview": _data_uri(img)}


def read_kept(value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        return b""


def face_crops(data: bytes, faces: list[dict]) -> list[dict]:
    """`faces` as the API reports them ({"index", "box"}), each with a square crop to tap."""
    img = _open(data)
    if img is None:
        return []
    choices = []
    for face in faces:
        x1, y1, x2, y2 = face["box"]
        side = max(x2 - x1, y2 - y1) * 1.5  # some hair and chin make a face recognisable
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        crop = img.crop((int(cx - side / 2), int(cy - side / 2), int(cx + side / 2), int(cy + side / 2)))
        crop.thumbnail((192, 192))
        choices.append({"index": face["index"], "box": face["box"], "crop": _data_uri(crop)})
    return choices
