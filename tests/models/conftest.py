"""Fixtures for the face model tests: the shared real photos and loaded backends (one per session).

`yunet_sface` is the default backend as users get it (the openvino engine on CPU);
`opencv_reference` the OpenCV engine that the other engines are compared with.
"""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from models.image import decode_image, downscale
from models.types import Detection
from models.yunet_sface import YunetSfaceBackend
from tests.models.helpers import MAX_PIXELS

FACES = Path(__file__).resolve().parents[2] / ".." / "shared" / "faces"


@pytest.fixture(scope="session")
def shared_faces() -> Path:
    if not (FACES / "manifest.csv").is_file():
        pytest.skip(f"the shared real-photo set is not at {FACES.resolve()}")
    return FACES


@pytest.fixture(scope="session")
def manifest(shared_faces: Path) -> list[dict[str, str]]:
    with (shared_faces / "manifest.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="session")
def group_photos(shared_faces: Path, manifest: list[dict[str, str]]) -> dict[str, Image.Image]:
    rows = [r for r in manifest if r["identity"] == "group"]
    return {r["path"]: decode_image(shared_faces / r["path"], max_pixels=MAX_PIXELS) for r in rows}


@pytest.fixture(scope="session")
def yunet_sface() -> YunetSfaceBackend:
    cv2.setNumThreads(1)
    backend = YunetSfaceBackend(device="cpu")
    backend.load()
    return backend


@pytest.fixture(scope="session")
def opencv_reference() -> YunetSfaceBackend:
    """The OpenCV engine: the reference the openvino (default) and torch engines are held to."""
    cv2.setNumThreads(1)
    backend = YunetSfaceBackend(device="cpu", engine="opencv")
    backend.load()
    return backend


@pytest.fixture(scope="session")
def photos(group_photos: dict[str, Image.Image]) -> list[np.ndarray]:
    """The group photos as the detector sees them (1600 px long side), for comparing engines."""
    return [np.asarray(downscale(img, 1600)[0].convert("RGB")) for img in group_photos.values()]


@pytest.fixture(scope="session")
def reference(opencv_reference: YunetSfaceBackend, photos: list[np.ndarray]) -> list[list[Detection]]:
    """OpenCV's detections on `photos`: what the other engines are held to."""
    return opencv_reference.detect(photos)
