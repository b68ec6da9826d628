"""Small helpers shared by the face model tests."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from models.types import Detection
from models.weights import WeightFile, verified_path

MAX_PIXELS = 60_000_000


def central(size: tuple[int, int], faces: Sequence[Any]) -> Any:
    """The face (anything with a .box) whose centre is nearest the image centre: LFW's labelled person."""
    cx, cy = size[0] / 2, size[1] / 2
    return min(faces, key=lambda f: (f.box[0] + f.box[2] - 2 * cx) ** 2 + (f.box[1] + f.box[3] - 2 * cy) ** 2)


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def best_ious(reference: list[Detection], other: list[Detection]) -> list[float]:
    """For each reference detection, its best IoU among `other` (0 when `other` is empty)."""
    return [max((iou(r.box, o.box) for o in other), default=0.0) for r in reference]


def rgb(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"))


def assert_same_detections(reference: list[list[Detection]], found: list[list[Detection]], *,
                           min_score: float) -> None:
    """Another engine's detections against the reference: every confident face on both sides has
    a twin (IoU >= 0.95), with landmarks within 1 px and the score within 0.01."""
    assert len(found) == len(reference)
    for ref, got in zip(reference, found):
        sure_ref = [f for f in ref if f.score >= min_score]
        sure_got = [f for f in got if f.score >= min_score]
        assert min(best_ious(sure_ref, got), default=1.0) >= 0.95
        assert min(best_ious(sure_got, ref), default=1.0) >= 0.95
        for r in sure_ref:
            twin = max(got, key=lambda g: best_ious([r], [g])[0])
            assert np.abs(np.subtract(r.landmarks, twin.landmarks)).max() <= 1.0
            assert abs(r.score - twin.score) <= 0.01


def tampered_copy(root: Path, weights: Sequence[WeightFile], tampered: WeightFile, at: int) -> Path:
    """`root` laid out like the packages, holding copies of `weights` with three bytes of
    `tampered` overwritten at offset `at`: for `weights_root=` arguments."""
    for weight in weights:
        target = root / weight.relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(verified_path(weight), target)
    with (root / tampered.relpath).open("r+b") as fh:
        fh.seek(at)
        fh.write(b"\x00\x01\x02")
    return root
