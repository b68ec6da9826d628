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
from typing import Sequence

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
    """`analyse_files`' answer for one photo: its faces, full size, and a draft for previews."""

    faces: list[FaceResult]
    size: tuple[int, int]  # upright full-resolution (width, height)
    preview: Image.Image  # the detection draft (long side >= DRAFT_SHARE * detect_long_side, or the photo)


def analyse_files(sources: Sequence[Path | bytes], backend: FaceBackend, *, max_pixels: int,
                  detect_long_side: int = 1600, min_face_px: int = 24,
                  min_score: float | None = None) -> list[PhotoAnalysis | ImageDecodeError]:
    """Faces of each photo file, in input order; a photo that cannot be decoded gives its error.

    Detection is batched across the photos; crops are cut one photo at a time, so at most one
    finer decode is alive at once (memory bounded by one photo, not by the batch).
    """
    drafts: list[Reduced | ImageDecodeError] = []
    for source in sources:
        try:
            drafts.append(decode_reduced(source, max_pixels=max_pixels,
                                         min_long_side=round(detect_long_side * DRAFT_SHARE)))
        except ImageDecodeError as exc:
            drafts.append(exc)
    decoded = [i for i, d in enumerate(drafts) if isinstance(d, Reduced)]
    found = detect_drafts([drafts[i] for i in decoded], backend, detect_long_side=detect_long_side,
                          min_face_px=min_face_px, min_score=min_score)
    crops: list[np.ndarray] = []
    per_photo: dict[int, list[Detection]] = {}
    results: list[PhotoAnalysis | ImageDecodeError] = list(drafts)  # type: ignore[arg-type]
    for i, faces in zip(decoded, found):
        draft = drafts[i]
        assert isinstance(draft, Reduced)
        try:
            crops.extend(crop_photo(sources[i], draft, faces, backend, max_pixels=max_pixels))
        except ImageDecodeError as exc:  # the finer decode can still find a broken tail
            results[i] = exc
            continue
        per_photo[i] = faces
    vectors = backend.embed(crops)
    row = 0
    for i, faces in per_photo.items():
        draft = drafts[i]
        assert isinstance(draft, Reduced)
        results[i] = PhotoAnalysis([_result(d, vectors[row + k]) for k, d in enumerate(faces)],
                                   draft.full_size, draft.image)
        row += len(faces)
    return results


def detect_drafts(drafts: Sequence[Reduced], backend: FaceBackend, *, detect_long_side: int,
                  min_face_px: int, min_score: float | None = None) -> list[list[Detection]]:
    """`detect_faces` on drafts: detections mapped back to full-resolution pixels."""
    threshold = backend.min_detection_score if min_score is None else min_score
    arrays, factors = [], []
    for draft in drafts:
        small, factor = shrink_array(to_array(draft.image), detect_long_side)
        arrays.append(small)
        factors.append(factor * draft.reduction)
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
               *, max_pixels: int) -> list[np.ndarray]:
    """Aligned crops of one photo's faces (full-resolution pixels) from the coarsest decode that
    loses nothing: the detection draft itself when it is fine enough, else a new decode."""
    if not detections:
        return []
    wanted = crop_reduction(detections, getattr(backend, "crop_px", None))
    source_image = draft if wanted >= draft.reduction else decode_reduced(source, max_pixels=max_pixels,
                                                                          reduction=wanted)
    scaled = [_in_reduced(d, source_image) for d in detections]
    return backend.crop_faces(to_array(source_image.image), scaled)


def _in_reduced(d: Detection, image: Reduced) -> Detection:
    if image.reduction == 1:
        return d
    f = image.from_full
    return Detection(box=tuple(f(v) for v in d.box),  # type: ignore[arg-type]
                     landmarks=tuple((f(x), f(y)) for x, y in d.landmarks), score=d.score)
