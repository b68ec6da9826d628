"""Bib numbers of a photo: where to look, at what scale, and which text counts as a bib.

One stage, plain functions, run after face detection (`read_bibs(image, face_boxes, reader)`):

1. Torso regions: a bib's centre sits about 2.2 face heights below the face's centre (5th-95th
   percentile 1.45-2.77 on 281 linked pairs), so each detected face gets a region spanning that
   range plus half a bib, scaled so the face is `FACE_PX` tall: the numerals then have the size
   the detector reads best, whatever the photo's resolution.
2. One pass over the whole photo, downscaled to `whole_long_side`, for runners whose face is not
   seen (from behind, turned away, cut off). Cheap because it is small; it finds close bibs.
3. Every text line found is recognised from the ORIGINAL pixels (a perspective crop), so small
   far bibs are read at full detail even when they were found on a small copy.
4. Filters: digits only, 1-6 of them; a confident read; not much smaller than the biggest
   numerals next to it (corral letters and gear-check or sponsor numbers under the bib's own
   number); duplicates of one bib found by both passes are merged.
5. Each read belongs to the face whose torso region holds it (nearest to the expected centre),
   and is dropped when its numerals are much smaller than that face (a year or sponsor line
   whose bib numerals were not read).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
from PIL import Image

from models.bib_reader import TextReader

BIB_BELOW_FACE = 2.2  # bib centre below the face centre, in face heights (median)
BIB_BELOW_RANGE = (1.45, 2.77)  # 5th-95th percentile of that distance
# The region spans the range plus half a bib above and more below: YuNet's boxes are tight
# (brow to chin), and on the shared race photos bib centres sat 1.8-3.3 of its face heights below.
REGION_TOP, REGION_BOTTOM = 1.0, 3.9  # face heights below the face centre
REGION_HALF_WIDTH = 1.9  # face heights either side of the face centre (bibs are ~2-3 faces wide)
FACE_PX = 32  # torso regions are scaled so the face is this tall (numerals ~15-30 px)
REC_HEIGHT = 48  # the recogniser's input height; crops are cut at this height
MAX_REGIONS = 40  # the largest faces' regions only, in crowds (the whole-photo pass sees the rest)
MIN_TEXT_PX = 8  # in original pixels: anything smaller is unreadable
MIN_SCORE = 0.80
LINE_ASPECT = (0.3, 5.5)  # width / height of a line of 1-6 numerals; wider lines are words  # recogniser confidence for a read to count
MIN_TEXT_OF_FACE = 0.25  # a bib's numerals are 0.5-0.8 face heights tall; a year line ~0.15
SMALLER_THAN_NEIGHBOUR = 0.5  # dropped when under this fraction of a taller digit line near it
DIGITS = re.compile(r"\d{1,6}")


def canonical_bib(text: str) -> str:
    """One spelling per bib number, for reads, start lists, selfie forms and searches alike:
    no spaces, no leading zeros ("0582" and "582" are one runner); other text unchanged."""
    compact = "".join(text.split())
    return (compact.lstrip("0") or "0") if compact.isdigit() else compact


@dataclass(frozen=True)
class BibRead:
    """One bib number read on a photo, in its ORIGINAL pixels (after EXIF orientation)."""

    number: str
    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    score: float  # the recogniser's confidence, 0-1
    face: int | None  # index into the face boxes given to `read_bibs`, or None
    text_px: float  # the numerals' height

    @property
    def centre(self) -> tuple[float, float]:
        return (self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2


@dataclass(frozen=True)
class _Line:
    quad: np.ndarray  # (4, 2) in original pixels
    from_torso: bool


def torso_region(face_box: Sequence[float], size: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """Where the bib of the runner with this face would be, clipped to the photo (None: off it)."""
    x1, y1, x2, y2 = face_box
    h = y2 - y1
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    top, bottom = cy + REGION_TOP * h, cy + REGION_BOTTOM * h
    left, right = cx - REGION_HALF_WIDTH * h, cx + REGION_HALF_WIDTH * h
    w_img, h_img = size
    box = (max(int(left), 0), max(int(top), 0), min(int(right), w_img), min(int(bottom), h_img))
    if box[2] - box[0] < 8 or box[3] - box[1] < 8:
        return None
    return box


def read_bibs(image: Image.Image, face_boxes: Sequence[Sequence[float]], reader: TextReader, *,
              whole_long_side: int = 384, overview: Image.Image | None = None) -> list[BibRead]:
    """The bib numbers on `image` (RGB, full resolution); `face_boxes` in its pixels.

    `whole_long_side` 0 skips the whole-photo pass (only runners with a visible face are read).
    `overview`: a smaller copy of `image` (the face detector's), which the whole-photo pass is
    shrunk from instead of the full image: 1 ms, not 20, for a 24 MP photo.
    """
    regions, scales, offsets, inner_edges = [], [], [], []
    largest = sorted(face_boxes, key=lambda b: b[3] - b[1], reverse=True)[:MAX_REGIONS]
    for box in largest:
        region = torso_region(box, image.size)
        if region is None:
            continue
        scale = FACE_PX / max(box[3] - box[1], 1.0)
        w, h = region[2] - region[0], region[3] - region[1]
        size = (max(int(w * scale), 1), max(int(h * scale), 1))
        # straight from the photo (no copy of the region), block-averaged before the bilinear step:
        # half the time of crop-then-resize, the same reads (bench/bibs.py)
        regions.append(np.asarray(image.resize(size, Image.BILINEAR, box=region, reducing_gap=2.0)))
        scales.append(scale)
        offsets.append(region[:2])
        # sides that cut through the photo (not its border): a line touching one is cut off
        inner_edges.append((region[0] > 0, region[1] > 0, region[2] < image.width, region[3] < image.height))
    whole_factor = 0.0
    if whole_long_side:
        whole_factor = min(whole_long_side / max(image.size), 1.0)
        size = (max(int(image.width * whole_factor), 1), max(int(image.height * whole_factor), 1))
        source = overview if overview is not None and max(overview.size) >= max(size) else image
        regions.append(np.asarray(source.resize(size, Image.BILINEAR, reducing_gap=2.0)))
        scales.append(whole_factor)
        offsets.append((0, 0))
        inner_edges.append((False, False, False, False))
    lines: list[_Line] = []
    for k, found in enumerate(reader.detect(regions)):
        torso = not (whole_long_side and k == len(regions) - 1)
        for text in found:
            if _touches(text.quad, regions[k].shape, inner_edges[k]):
                continue  # part of a bib cut by this region; the owner's region or the whole pass has it
            quad = text.quad / scales[k] + np.asarray(offsets[k], np.float32)
            lines.append(_Line(quad, torso))
    lines = [line for line in _unique_lines(lines) if _could_be_numerals(line.quad)]
    crops = [_rectified(image, line.quad) for line in lines]
    reads = []
    for line, (text, score) in zip(lines, reader.recognise(crops)):
        number = "".join(text.split())
        if score >= MIN_SCORE and DIGITS.fullmatch(number):
            number = canonical_bib(number)
            reads.append(BibRead(number=number, box=_bounds(line.quad, image.size), score=score,
                                 face=None, text_px=_height(line.quad)))
    reads = drop_small_numerals(reads)
    reads = merge_duplicates(reads)
    return drop_small_for_face(attach_to_faces(reads, face_boxes), face_boxes)


def drop_small_numerals(reads: Sequence[BibRead]) -> list[BibRead]:
    """Without digit lines much smaller than a taller one on the same card: printed within a
    line's height or so above or below it, and within its width."""
    kept = []
    for read in reads:
        cx, cy = read.centre
        dominated = False
        for other in reads:
            if other is read or other.text_px * SMALLER_THAN_NEIGHBOUR <= read.text_px:
                continue
            x1, y1, x2, y2 = other.box
            pad_x, pad_y = 0.1 * (x2 - x1), 1.2 * other.text_px
            if x1 - pad_x <= cx <= x2 + pad_x and y1 - pad_y <= cy <= y2 + pad_y:
                dominated = True
                break
        if not dominated:
            kept.append(read)
    return kept


def drop_small_for_face(reads: Sequence[BibRead], face_boxes: Sequence[Sequence[float]]) -> list[BibRead]:
    """Without reads too small to be the numerals of the face they belong to."""
    return [r for r in reads
            if r.face is None or r.text_px >= MIN_TEXT_OF_FACE * (face_boxes[r.face][3] - face_boxes[r.face][1])]


def merge_duplicates(reads: Sequence[BibRead]) -> list[BibRead]:
    """One read per bib: overlapping reads (both passes found it) keep the most confident."""
    kept: list[BibRead] = []
    for read in sorted(reads, key=lambda r: (-round(r.score, 2), -len(r.number))):
        if all(_iou(read.box, k.box) < 0.3 for k in kept):
            kept.append(read)
    return kept


def attach_to_faces(reads: Sequence[BibRead], face_boxes: Sequence[Sequence[float]]) -> list[BibRead]:
    """Each read gets the face whose torso region holds its centre, nearest the expected spot;
    a face keeps only its most confident read (others stay, without a face)."""
    candidates = []
    for r, read in enumerate(reads):
        cx, cy = read.centre
        for f, (x1, y1, x2, y2) in enumerate(face_boxes):
            h = max(y2 - y1, 1.0)
            dx = (cx - (x1 + x2) / 2) / h
            dy = (cy - (y1 + y2) / 2) / h
            if abs(dx) <= REGION_HALF_WIDTH and REGION_TOP <= dy <= REGION_BOTTOM:
                candidates.append((abs(dx) + abs(dy - BIB_BELOW_FACE), -read.score, r, f))
    face_of: dict[int, int] = {}
    taken: set[int] = set()
    for _, _, r, f in sorted(candidates):
        if r not in face_of and f not in taken:
            face_of[r] = f
            taken.add(f)
    return [BibRead(read.number, read.box, read.score, face_of.get(r), read.text_px)
            for r, read in enumerate(reads)]


def _unique_lines(lines: Sequence[_Line]) -> list[_Line]:
    # The whole-photo pass and a torso region often find the same line; keep the torso's (finer).
    kept: list[_Line] = []
    for line in sorted(lines, key=lambda ln: not ln.from_torso):
        box = _bounds(line.quad, None)
        if all(_iou(box, _bounds(k.quad, None)) < 0.5 for k in kept):
            kept.append(line)
    return kept


def _rectified(image: Image.Image, quad: np.ndarray) -> np.ndarray:
    """The text line cut upright from the original pixels, REC_HEIGHT tall at most."""
    x1, y1 = np.floor(quad.min(axis=0)).astype(int)
    x2, y2 = np.ceil(quad.max(axis=0)).astype(int)
    x1, y1 = max(x1, 0), max(y1, 0)
    x2, y2 = min(x2, image.width), min(y2, image.height)
    patch = np.asarray(image.crop((x1, y1, max(x2, x1 + 1), max(y2, y1 + 1))))
    local = (quad - np.array([x1, y1], np.float32)).astype(np.float32)
    width = float(max(np.linalg.norm(local[1] - local[0]), np.linalg.norm(local[2] - local[3]), 1.0))
    height = float(max(_height(local), 1.0))
    scale = min(REC_HEIGHT / height, 1.0)
    out_w, out_h = max(int(round(width * scale)), 1), max(int(round(height * scale)), 1)
    target = np.array([[0, 0], [out_w, 0], [out_w, out_h], [0, out_h]], np.float32)
    matrix = cv2.getPerspectiveTransform(local, target)
    return cv2.warpPerspective(patch, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _touches(quad: np.ndarray, shape: tuple[int, ...], inner: tuple[bool, bool, bool, bool],
             margin: float = 2.0) -> bool:
    x1, y1 = quad.min(axis=0)
    x2, y2 = quad.max(axis=0)
    h, w = shape[:2]
    near = (x1 <= margin, y1 <= margin, x2 >= w - 1 - margin, y2 >= h - 1 - margin)
    return any(n and i for n, i in zip(near, inner))


def _could_be_numerals(quad: np.ndarray) -> bool:
    height = _height(quad)
    width = float((np.linalg.norm(quad[1] - quad[0]) + np.linalg.norm(quad[2] - quad[3])) / 2)
    return height >= MIN_TEXT_PX and LINE_ASPECT[0] <= width / max(height, 1.0) <= LINE_ASPECT[1]


def _height(quad: np.ndarray) -> float:
    return float((np.linalg.norm(quad[3] - quad[0]) + np.linalg.norm(quad[2] - quad[1])) / 2)


def _bounds(quad: np.ndarray, size: tuple[int, int] | None) -> tuple[float, float, float, float]:
    x1, y1 = quad.min(axis=0)
    x2, y2 = quad.max(axis=0)
    if size is not None:
        x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, size[0]), min(y2, size[1])
    return float(x1), float(y1), float(x2), float(y2)


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
