"""Photos in, faces out: detect on a downscaled copy, embed aligned crops of the full image.

Plain functions, one per stage, so the worker (event photos) and the API (selfies) share them.
Two entry points: `analyse_images` for decoded images (selfies, tests, calibration) and
`analyse_files` for event photos on disk, which decodes JPEGs at reduced scale wherever that
loses nothing: detection straight on a DCT-scaled draft, and each photo's crops from the
coarsest decode in which every one of its faces is still at least the crop's size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from models.image import JPEG_REDUCTIONS, ImageDecodeError, Reduced, decode_reduced, downscale, shrink_array, to_array
from models.types import Detection, FaceBackend

# Detection runs on the coarsest JPEG draft whose long side is at least `detect_long_side`, shrunk
# to exactly that long side: the detector sees the size it always saw. (A 1/4 draft of a 6000 px
# photo, 1500 px, is 15 ms cheaper, but YuNet's landmarks on small faces move enough at 1500 vs
# 1600 px to change embeddings: cosine down to 0.4 on 50 px faces, bench/pipeline.py --steps.)
DRAFT_SHARE = 1.0


@dataclass(frozen=True)
class FaceResult:
    """One face in the ORIGINAL pixels of its photo (after EXIF orientation)."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2, clipped to the photo
    landmarks: tuple[tuple[float, float], ...]
    score: float
    face_px: float  # the box's smaller side: how much detail the embedding had
    embedding: np.ndarray  # float32, L2-normalised, shape (backend.embedding_dim,)


def analyse_images(images: Sequence[Image.Image], backend: FaceBackend, *, detect_long_side: int = 1600,
                   min_face_px: int = 24, min_score: float | None = None) -> list[list[FaceResult]]:
    """Faces of every image, in input order; all crops are embedded together in batches."""
    detections = detect_faces(images, backend, detect_long_side=detect_long_side,
                              min_face_px=min_face_px, min_score=min_score)
    return embed_faces(images, detections, backend)


def detect_faces(images: Sequence[Image.Image], backend: FaceBackend, *, detect_long_side: int = 1600,
                 min_face_px: int = 24, min_score: float | None = None) -> list[list[Detection]]:
    """Detections in original pixels, without the weak ones and the ones too small to recognise.

    Detecting at 1600 px cost no accuracy against native resolution (shared/MODELS.md) and
    bounds time and memory for 50 MP uploads.
    """
    threshold = backend.min_detection_score if min_score is None else min_score
    small = [downscale(img, detect_long_side) for img in images]
    found = backend.detect([to_array(img) for img, _ in small])
    kept: list[list[Detection]] = []
    for img, (_, factor), faces in zip(images, small, found):
        full = [_clipped(d.scaled(factor), img.size) for d in faces if d.score >= threshold]
        kept.append([d for d in full if min(d.width, d.height) >= min_face_px])
    return kept


def embed_faces(images: Sequence[Image.Image], detections: Sequence[Sequence[Detection]],
                backend: FaceBackend) -> list[list[FaceResult]]:
    """Embed each detection from its full-resolution image; detections in that image's pixels."""
    crops: list[np.ndarray] = []
    for img, faces in zip(images, detections):
        if faces:  # skip the full-size array copy for photos without faces
            crops.extend(backend.crop_faces(to_array(img), faces))
    vectors = backend.embed(crops)
    results: list[list[FaceResult]] = []
    row = 0
    for faces in detections:
        results.append([_result(d, vectors[row + k]) for k, d in enumerate(faces)])
        row += len(faces)
    return results


def _clipped(d: Detection, size: tuple[int, int]) -> Detection:
    w, h = size
    x1, y1, x2, y2 = d.box
    box = (min(max(x1, 0.0), w), min(max(y1, 0.0), h), min(max(x2, 0.0), w), min(max(y2, 0.0), h))
    return Detection(box=box, landmarks=d.landmarks, score=d.score)


def _result(d: Detection, vector: np.ndarray) -> FaceResult:
    return FaceResult(box=d.box, landmarks=d.landmarks, score=d.score,
                      face_px=min(d.width, d.height), embedding=vector.astype(np.float32))


@dataclass
class PhotoAnalysis:
    """`analyse_files`' answer for one photo: its faces, full size, and an image for previews."""

    faces: list[FaceResult]
    size: tuple[int, int]  # upright full-resolution (width, height)
    # what the detector saw: the photo at `detect_long_side` (or smaller, as it came), the gallery
    # preview's own size, so previews cost a JPEG encode and no resize of a larger decode
    preview: Image.Image


# analyse_files' hook: (photo index, the photo at full resolution on demand, its detections)
FullImageUse = Callable[[int, Callable[[], Image.Image], list[Detection]], None]


def analyse_files(sources: Sequence[Path | bytes], backend: FaceBackend, *, max_pixels: int,
                  detect_long_side: int = 1600, min_face_px: int = 24, min_score: float | None = None,
                  use_full_image: FullImageUse | None = None) -> list[PhotoAnalysis | ImageDecodeError]:
    """Faces of each photo file, in input order; a photo that cannot be decoded gives its error.

    Detection is batched across the photos; crops are cut one photo at a time, so at most one
    finer decode is alive at once (memory bounded by one photo, not by the batch).

    `use_full_image` is called for each decoded photo right after its crops, with a function that
    gives the upright full-resolution image: the crops' own decode when they needed full
    resolution (race photos nearly always do), else a new one. The bib reader reads there, so a
    photo is decoded at full resolution once, not twice. Its errors are the caller's to handle.
    """
    drafts: list[Reduced | ImageDecodeError] = []
    for source in sources:
        try:
            drafts.append(decode_reduced(source, max_pixels=max_pixels,
                                         min_long_side=round(detect_long_side * DRAFT_SHARE)))
        except ImageDecodeError as exc:
            drafts.append(exc)
    decoded = [i for i, d in enumerate(drafts) if isinstance(d, Reduced)]
    detected = [shrink_array(to_array(drafts[i].image), detect_long_side) for i in decoded]  # type: ignore[union-attr]
    found = detect_drafts([drafts[i] for i in decoded], detected, backend, min_face_px=min_face_px,
                          min_score=min_score)
    previews = dict(zip(decoded, (Image.fromarray(array) for array, _ in detected)))
    del detected
    crops: list[np.ndarray] = []
    per_photo: dict[int, list[Detection]] = {}
    results: list[PhotoAnalysis | ImageDecodeError] = list(drafts)  # type: ignore[arg-type]
    for i, faces in zip(decoded, found):
        draft = drafts[i]
        assert isinstance(draft, Reduced)
        try:
            photo_crops, cut_from = crop_photo(sources[i], draft, faces, backend, max_pixels=max_pixels)
        except ImageDecodeError as exc:  # the finer decode can still find a broken tail
            results[i] = exc
            continue
        crops.extend(photo_crops)
        per_photo[i] = faces
        if use_full_image is not None:
            use_full_image(i, _full_image(sources[i], cut_from, max_pixels), faces)
        del cut_from
    vectors = backend.embed(crops)
    row = 0
    for i, faces in per_photo.items():
        draft = drafts[i]
        assert isinstance(draft, Reduced)
        results[i] = PhotoAnalysis([_result(d, vectors[row + k]) for k, d in enumerate(faces)],
                                   draft.full_size, previews[i])
        row += len(faces)
    return results


def detect_drafts(drafts: Sequence[Reduced], shrunk: Sequence[tuple[np.ndarray, float]], backend: FaceBackend,
                  *, min_face_px: int, min_score: float | None = None) -> list[list[Detection]]:
    """`detect_faces` on drafts: detections mapped back to full-resolution pixels. `shrunk`: each
    draft shrunk to the detection size by `shrink_array` (the caller keeps them for previews)."""
    threshold = backend.min_detection_score if min_score is None else min_score
    arrays = [small for small, _ in shrunk]
    factors = [factor * draft.reduction for draft, (_, factor) in zip(drafts, shrunk)]
    kept: list[list[Detection]] = []
    for draft, factor, faces in zip(drafts, factors, backend.detect(arrays)):
        full = [_clipped(d.scaled(factor), draft.full_size) for d in faces if d.score >= threshold]
        kept.append([d for d in full if min(d.width, d.height) >= min_face_px])
    return kept


def crop_reduction(detections: Sequence[Detection], crop_px: int | None) -> int:
    """The coarsest JPEG reduction at which every face's box is still at least `crop_px` wide
    and high, so no crop is upsampled from a reduced decode; 1 (full resolution) otherwise."""
    if not detections or crop_px is None:
        return 1 if detections else max(JPEG_REDUCTIONS)
    smallest = min(min(d.width, d.height) for d in detections)
    return next((r for r in JPEG_REDUCTIONS if smallest / r >= crop_px), 1)


def crop_photo(source: Path | bytes, draft: Reduced, detections: Sequence[Detection], backend: FaceBackend,
               *, max_pixels: int) -> tuple[list[np.ndarray], Reduced]:
    """Aligned crops of one photo's faces (full-resolution pixels) from the coarsest decode that
    loses nothing: the detection draft itself when it is fine enough, else a new decode; and the
    decode they were cut from."""
    if not detections:
        return [], draft
    wanted = crop_reduction(detections, getattr(backend, "crop_px", None))
    source_image = draft if wanted >= draft.reduction else decode_reduced(source, max_pixels=max_pixels,
                                                                          reduction=wanted)
    scaled = [_in_reduced(d, source_image) for d in detections]
    return crop_by_region(source_image.image, scaled, backend), source_image


def _full_image(source: Path | bytes, decoded: Reduced, max_pixels: int) -> Callable[[], Image.Image]:
    if decoded.reduction == 1:
        return lambda: decoded.image
    return lambda: decode_reduced(source, max_pixels=max_pixels, reduction=1).image


def crop_by_region(image: Image.Image, detections: Sequence[Detection], backend: FaceBackend) -> list[np.ndarray]:
    """`backend.crop_faces`, fed a region around each face instead of the whole photo: a 24 MP
    photo costs 50 ms to turn into an array, 18 face regions 2 ms (bench/pipeline.py --steps).

    A region reaches 0.6 of a face size beyond the box and the landmarks on every side, farther
    than either backend's crop reaches (SFace's aligned 112 px crop spans about 1.5 boxes, more
    when the face is tilted; facenet's the box plus a quarter), so the crops equal those cut from
    the whole photo (tests/models/test_pipeline.py; 0.4 still did on the shared photos, 0.1 not).
    """
    crops = []
    width, height = image.size
    for d in detections:
        xs = [d.box[0], d.box[2], *(x for x, _ in d.landmarks)]
        ys = [d.box[1], d.box[3], *(y for _, y in d.landmarks)]
        reach = 0.6 * max(d.width, d.height, max(xs) - min(xs), max(ys) - min(ys), 1.0)
        left, top = max(0, int(min(xs) - reach)), max(0, int(min(ys) - reach))
        right, bottom = min(width, int(max(xs) + reach) + 2), min(height, int(max(ys) + reach) + 2)
        region = to_array(image.crop((left, top, max(right, left + 1), max(bottom, top + 1))))
        crops.extend(backend.crop_faces(region, [d.shifted(-left, -top)]))
    return crops


def _in_reduced(d: Detection, image: Reduced) -> Detection:
    if image.reduction == 1:
        return d
    f = image.from_full
    return Detection(box=tuple(f(v) for v in d.box),  # type: ignore[arg-type]
                     landmarks=tuple((f(x), f(y)) for x, y in d.landmarks), score=d.score)
