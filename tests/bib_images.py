"""Labelled bib photos for tests and bench/bibs.py, built from ../shared/faces.

- RACE_LABELS: the bibs readable by eye on the 5 real race photos (labelled by looking at them).
- `bib_scene`: a real photo with bib-like cards (white, black numerals, a small printed line
  such as a year or sponsor under/over them) pasted on the torsos of its detected faces, about
  2.2 face heights below the face centre, with a random tilt, perspective and blur; optionally
  one more card where no face is seen. Returns the image and the (number, box) labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

RACE_LABELS = {  # file -> the bib numbers a person can read on it
    "race_manuel_test1.jpg": {"518"},
    "race_manuel_test2.jpg": {"246", "376"},
    "race_pietro_test1.jpg": {"609", "61282", "582"},
    "race_pietro_test2.jpg": {"471"},
    "race_pietro_test4.jpg": {"2273"},
}
SCENE_BASES = ["human_group1.jpg", "human_group2.jpg", "human_group3.jpg", "linzaer_2.jpg", "linzaer_9.jpg",
               "dlib_voc_2008_001322.jpg", "dlib_voc_2008_002079.jpg", "dlib_voc_2007_007763.jpg",
               "dlib_voc_2008_001009.jpg", "dlib_voc_2008_002470.jpg"]  # no real bibs on these
_BOLD_FONTS = ["/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
               "/usr/share/fonts/truetype/liberation/LiberationSans-Bold.ttf"]


@dataclass(frozen=True)
class Label:
    number: str
    box: tuple[float, float, float, float]


def font(size: int) -> ImageFont.FreeTypeFont:
    for path in _BOLD_FONTS:
        if Path(path).is_file():
            return ImageFont.truetype(path, size)
    return ImageFont.load_default(size=size)  # Pillow's own font: always there


def random_number(rng: np.random.Generator) -> str:
    digits = int(rng.choice([1, 2, 3, 3, 4, 4, 4, 5, 5, 6]))
    first = str(rng.integers(1, 10))
    return first + "".join(str(d) for d in rng.integers(0, 10, digits - 1))


def bib_card(number: str, width: int, rng: np.random.Generator) -> Image.Image:
    """An RGBA bib: numerals about 45% of its height, a small printed line above them."""
    height = int(width * 0.62)
    card = Image.new("RGBA", (width, height), tuple(int(v) for v in rng.integers(225, 256, 3)) + (255,))
    draw = ImageDraw.Draw(card)
    size = int(height * 0.48)
    numerals = font(size)
    while draw.textlength(number, font=numerals) > width * 0.9 and size > 6:
        size -= 2
        numerals = font(size)
    text_w = draw.textlength(number, font=numerals)
    top = int(height * 0.3)
    draw.text(((width - text_w) / 2, top), number, fill=(10, 10, 10, 255), font=numerals)
    small = font(max(int(height * 0.1), 6))  # the year / gear-check line: much smaller numerals
    draw.text((width * 0.1, height * 0.08), f"{rng.integers(2019, 2027)}", fill=(40, 40, 160, 255), font=small)
    draw.rectangle((0, height * 0.86, width, height), fill=(200, 40, 40, 255))  # sponsor band
    return card


def paste_card(photo: Image.Image, number: str, centre: tuple[float, float], width: int,
               rng: np.random.Generator) -> Label:
    """Paste a tilted, slightly warped, blurred card centred on `centre`; returns its label."""
    card = bib_card(number, width, rng)
    w, h = card.size
    warp = rng.uniform(-0.08, 0.08, 8) * np.array([w, h] * 4)
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], float)
    dst = src + warp.reshape(4, 2)
    card = card.transform(card.size, Image.PERSPECTIVE, _perspective_coeffs(dst, src), Image.BICUBIC)
    card = card.rotate(float(rng.uniform(-12, 12)), Image.BICUBIC, expand=True)
    blur = float(rng.uniform(0, 1.2)) * width / 150
    if blur > 0.3:
        card = card.filter(ImageFilter.GaussianBlur(blur))
    x, y = int(centre[0] - card.width / 2), int(centre[1] - card.height / 2)
    photo.paste(card, (x, y), card)
    # the label box: where the numerals are (the card's middle band), in photo pixels
    return Label(number, (x + card.width * 0.1, y + card.height * 0.3, x + card.width * 0.9, y + card.height * 0.8))


def bib_scene(base: Image.Image, face_boxes: list[tuple[float, float, float, float]], rng: np.random.Generator,
              *, faceless_card: bool = True, max_cards: int = 6) -> tuple[Image.Image, list[Label]]:
    """`base` with cards on the torsos of up to `max_cards` faces (those whose torso is in the photo)."""
    photo = base.convert("RGB").copy()
    labels: list[Label] = []
    used: list[tuple[float, float, float, float]] = []
    order = sorted(face_boxes, key=lambda b: -(b[3] - b[1]))
    for x1, y1, x2, y2 in order[:max_cards]:
        h = y2 - y1
        centre = ((x1 + x2) / 2 + rng.uniform(-0.3, 0.3) * h, (y1 + y2) / 2 + rng.uniform(1.6, 2.7) * h)
        width = int(h * rng.uniform(1.6, 2.3))
        box = (centre[0] - width / 2, centre[1] - width * 0.35, centre[0] + width / 2, centre[1] + width * 0.35)
        if box[0] < 0 or box[2] > photo.width or box[3] > photo.height or width < 24:
            continue
        if any(_overlap(box, u) for u in used):
            continue
        used.append(box)
        labels.append(paste_card(photo, _fresh(labels, rng), centre, width, rng))
    if faceless_card:  # a runner whose face is not seen: a big card low in the photo
        width = int(max(photo.size) * rng.uniform(0.12, 0.2))
        for _ in range(20):
            centre = (rng.uniform(width, photo.width - width), rng.uniform(photo.height * 0.55, photo.height - width * 0.5))
            box = (centre[0] - width / 2, centre[1] - width * 0.35, centre[0] + width / 2, centre[1] + width * 0.35)
            if not any(_overlap(box, u) for u in used) and not any(_overlap(box, f) for f in face_boxes):
                labels.append(paste_card(photo, _fresh(labels, rng), centre, width, rng))
                break
    return photo, labels


def _fresh(labels: list[Label], rng: np.random.Generator) -> str:
    while True:
        number = random_number(rng)
        if all(number != lb.number for lb in labels):
            return number


def _overlap(a, b) -> bool:  # type: ignore[no-untyped-def]
    return not (a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1])


def _perspective_coeffs(src: np.ndarray, dst: np.ndarray) -> list[float]:
    """PIL's 8 coefficients mapping output points `dst` to input points `src`."""
    rows = []
    for (x, y), (u, v) in zip(dst, src):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    coeffs = np.linalg.solve(np.array(rows, float), src.reshape(8))
    return coeffs.tolist()
