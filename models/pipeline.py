"""Photos in, faces out: detect on a shrunk copy, embed aligned crops of the full image.

Plain functions, one per stage, so the worker (event photos) and the API (selfies) share them.
Two entry points: `analyse_images` for decoded images (selfies, tests, calibration) and
`analyse_files` for event photos on disk, which decodes each photo once, at full resolution, and
feeds every stage from that decode.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from models.image import ImageDecodeError, decode_image, detection_image, to_array
from models.types import Detection, FaceBackend

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
    shrunk = [detection_image(img, detect_long_side) for img in images]
    return detect_shrunk([img.size for img in images], shrunk, backend, min_face_px=min_face_px, min_score=min_score)


def detect_shrunk(sizes: Sequence[tuple[int, int]], shrunk: Sequence[tuple[np.ndarray, float]],
                  backend: FaceBackend, *, min_face_px: int, min_score: float | None = None) -> list[list[Detection]]:
    """`detect_faces` on images already shrunk by `detection_image` (`sizes`: their full sizes)."""
    threshold = backend.min_detection_score if min_score is None else min_score
    kept: list[list[Detection]] = []
    for size, (_, factor), faces in zip(sizes, shrunk, backend.detect([array for array, _ in shrunk])):
        full = [_clipped(d.scaled(factor), size) for d in faces if d.score >= threshold]
        kept.append([d for d in full if min(d.width, d.height) >= min_face_px])
    return kept


def embed_faces(images: Sequence[Image.Image], detections: Sequence[Sequence[Detection]],
                backend: FaceBackend) -> list[list[FaceResult]]:
    """Embed each detection from its full-resolution image; detections in that image's pixels."""
    crops: list[np.ndarray] = []
    for img, faces in zip(images, detections):
        crops.extend(crop_by_region(img, faces, backend))
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


# analyse_files' hook: (photo index, the photo at full resolution, what the detector saw, its detections)
FullImageUse = Callable[[int, Image.Image, Image.Image, list[Detection]], None]


def analyse_files(sources: Sequence[Path | bytes], backend: FaceBackend, *, max_pixels: int,
                  detect_long_side: int = 1600, min_face_px: int = 24, min_score: float | None = None,
                  use_full_image: FullImageUse | None = None) -> list[PhotoAnalysis | ImageDecodeError]:
    """Faces of each photo file, in input order; a photo that cannot be decoded gives its error.

    Each photo is decoded once, at full resolution, and that decode feeds every stage: the
    detector sees it shrunk by `detection_image`, the embedder gets crops cut around each face,
    and `use_full_image` (the bib reader) is called with it right after the crops (its errors are
    the caller's to handle). Detection used to run on a 1/2 JPEG draft: race photos then paid two
    decodes, since their small faces need full resolution, and the draft plus its shrink cost
    three times this one's shrink, for the same recall and false matches (bench/calibrate.py --race).

    Photos are taken one at a time, so at most one full decode is alive (memory bounded by one
    photo, not by the batch); the crops of all of them are embedded together.
    """
    results: list[PhotoAnalysis | ImageDecodeError | None] = [None] * len(sources)
    crops: list[np.ndarray] = []
    analysed: list[tuple[int, list[Detection], tuple[int, int], Image.Image]] = []
    for i, source in enumerate(sources):
        try:
            image = decode_image(source, max_pixels=max_pixels)
        except ImageDecodeError as exc:
            results[i] = exc
            continue
        shrunk = detection_image(image, detect_long_side)
        [faces] = detect_shrunk([image.size], [shrunk], backend, min_face_px=min_face_px, min_score=min_score)
        preview = Image.fromarray(shrunk[0])
        crops.extend(crop_by_region(image, faces, backend))
        if use_full_image is not None:
            use_full_image(i, image, preview, faces)
        analysed.append((i, faces, image.size, preview))
        del image, shrunk
    vectors = backend.embed(crops)
    row = 0
    for i, faces, size, preview in analysed:
        results[i] = PhotoAnalysis([_result(d, vectors[row + k]) for k, d in enumerate(faces)], size, preview)
        row += len(faces)
    return results  # type: ignore[return-value]  # every slot is filled above


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
