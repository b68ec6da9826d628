"""An event's look and privacy text on the runner pages: colours that stay readable, the logo.

The organiser picks one colour; the pages need it as a button background (with black or white
text, whichever contrasts more) and as a link colour on white, darkened until it reaches the
WCAG AA 4.5:1 ratio. Computed here once so no page can pick an unreadable pair.
"""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from app.db import Event
from app.db.session import UnitOfWork
from app.errors import Unprocessable
from app.storage import PhotoStore

DEFAULT_COLOUR = "#0b5fff"
HEX_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")
LOGO_MAX_BYTES = 2 * 2**20
LOGO_MAX_SIDE = 512
AA = 4.5


@dataclass(frozen=True)
class Palette:
    accent: str  # button and bar backgrounds
    on_accent: str  # text on `accent`
    accent_text: str  # links and headings on white


def _luminance(hex_colour: str) -> float:
    channels = [int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def _darken(hex_colour: str, factor: float) -> str:
    return "#" + "".join(f"{round(int(hex_colour[i:i + 2], 16) * factor):02x}" for i in (1, 3, 5))


def _readable_on_white(colour: str) -> str:
    """`colour`, darkened just enough to reach 4.5:1 against white."""
    text, factor = colour, 1.0
    while contrast(text, "#ffffff") < AA and factor > 0:
        factor = round(factor - 0.05, 2)
        text = _darken(colour, factor)
    return text


def palette(colour: str | None) -> Palette:
    accent = (colour if colour and HEX_COLOUR.match(colour) else DEFAULT_COLOUR).lower()
    on_accent = "#ffffff" if contrast(accent, "#ffffff") >= contrast(accent, "#000000") else "#000000"
    if contrast(accent, on_accent) < AA:  # a mid-tone that neither black nor white reads on
        accent, on_accent = _readable_on_white(accent), "#ffffff"
    return Palette(accent=accent, on_accent=on_accent, accent_text=_readable_on_white(accent))


def brand_css(event: Event) -> str:
    p = palette(event.brand_colour)
    return f":root{{--accent:{p.accent};--on-accent:{p.on_accent};--accent-text:{p.accent_text}}}\n"


def set_logo(uow: UnitOfWork, store: PhotoStore, event: Event, data: bytes) -> None:
    """Store a logo, re-encoded as a PNG of at most 512 px (no SVG: it can carry script)."""
    if len(data) > LOGO_MAX_BYTES:
        raise Unprocessable("The logo must be at most 2 MB.", code="logo_too_large")
    try:
        with Image.open(io.BytesIO(data), formats=["PNG", "JPEG", "WEBP"]) as img:
            img.load()
            img.thumbnail((LOGO_MAX_SIDE, LOGO_MAX_SIDE))
            out = io.BytesIO()
            img.convert("RGBA").save(out, "PNG", optimize=True)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise Unprocessable("The logo must be a PNG, JPEG or WebP image.", code="not_an_image") from exc
    old_key = event.logo_key
    # a new name per logo, so browsers that cached the old one for a day see the new one at once
    key = f"events/{event.id}/branding/logo-{hashlib.sha256(out.getvalue()).hexdigest()[:16]}.png"
    store.put_bytes(key, out.getvalue())
    event.logo_key = key
    uow.session.flush()
    if old_key and old_key != key:
        uow.after_commit(lambda: store.delete(old_key))


def remove_logo(uow: UnitOfWork, store: PhotoStore, event: Event) -> None:
    if event.logo_key:
        key, event.logo_key = event.logo_key, None
        uow.session.flush()
        uow.after_commit(lambda: store.delete(key))


def privacy_controller(event: Event, organisation_name: str | None = None) -> str:
    return event.privacy_controller or organisation_name or f"the organisers of {event.name}"


DEFAULT_RETENTION = "until you delete them, which you can do at any time from your gallery or any of our e-mails"


def privacy_retention(event: Event) -> str:
    if event.privacy_retention:
        return event.privacy_retention
    # the face templates also end with the event's retention period (app/services/privacy.py)
    return (f"{DEFAULT_RETENTION}; the face templates are deleted {event.retention_days} days after the event "
            "at the latest")


def update_branding(event: Event, *, colour: str | None, privacy_controller: str | None,
                    privacy_retention: str | None) -> None:
    if colour and not HEX_COLOUR.match(colour):
        raise Unprocessable("The colour must look like #1a2b3c.", code="invalid_colour")
    event.brand_colour = colour.lower() if colour else None
    event.privacy_controller = (privacy_controller or "").strip()[:300] or None
    event.privacy_retention = (privacy_retention or "").strip()[:300] or None
