"""Pipeline stages: original-pixel geometry, filters, batching and order (fake and real backends)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pytest
from PIL import Image

from models.fake import FakeBackend, paint_face
from models.image import ImageDecodeError
from models import pipeline
from models.facenet import crop_face
from models.pipeline import FaceResult, analyse_files, analyse_images, crop_by_region
from models.types import Detection
from models.yunet_sface import YunetSfaceBackend
from tests.models.helpers import iou


class SpyBackend(FakeBackend):
    """Records what the pipeline hands to the backend."""

    def __init__(self) -> None:
        super().__init__()
        self.detect_shapes: list[tuple[int, ...]] = []
        self.crop_shapes: list[tuple[int, ...]] = []
        self.embed_calls: list[int] = []

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        self.detect_shapes += [img.shape for img in images]
        return super().detect(images)

    def crop_faces(self, image: np.ndarray, detections: Sequence[Detection]) -> list[np.ndarray]:
        self.crop_shapes.append(image.shape)
        return super().crop_faces(image, detections)

    def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        self.embed_calls.append(len(crops))
        return super().embed(crops)


def event_photo(size: tuple[int, int], faces: list[tuple[tuple[int, int, int, int], int]]) -> Image.Image:
    img = Image.new("RGB", size, (40, 110, 60))
    for box, identity in faces:
        paint_face(img, box, identity)
    return img


def test_boxes_are_in_original_pixels_and_crops_come_from_full_resolution() -> None:
    spy = SpyBackend()
    photo = event_photo((4000, 3000), [((400, 300, 800, 760), 1), ((3000, 2000, 3120, 2130), 2)])
    [faces] = analyse_images([photo], spy, detect_long_side=1000)
    assert spy.detect_shapes == [(750, 1000, 3)]
    # one region around each face, cut from the full-resolution photo (the 460 px face fits in it)
    assert len(spy.crop_shapes) == 2 and max(shape[0] for shape in spy.crop_shapes) >= 460
    boxes = sorted(f.box for f in faces)
    assert boxes[0] == pytest.approx((400, 300, 800, 760), abs=8)
    assert boxes[1] == pytest.approx((3000, 2000, 3120, 2130), abs=8)
    assert all(isinstance(f, FaceResult) and f.embedding.dtype == np.float32 for f in faces)
    assert faces[0].face_px == pytest.approx(min(faces[0].box[2] - faces[0].box[0], faces[0].box[3] - faces[0].box[1]))


def test_small_photos_are_never_upscaled() -> None:
    spy = SpyBackend()
    analyse_images([event_photo((500, 400), [((10, 10, 60, 60), 3)])], spy, detect_long_side=1600)
    assert spy.detect_shapes == [(400, 500, 3)]


def test_filters_on_face_size_in_original_pixels_and_on_score() -> None:
    photo = event_photo((3000, 2000), [((100, 100, 140, 140), 1), ((500, 500, 516, 516), 2)])
    sizes = [f.face_px for f in analyse_images([photo], FakeBackend(), detect_long_side=1500)[0]]
    assert sizes == [pytest.approx(40, abs=2)]  # the 16 px face is under the default 24 px
    assert len(analyse_images([photo], FakeBackend(), detect_long_side=1500, min_face_px=10)[0]) == 2
    assert analyse_images([photo], FakeBackend(), min_score=0.999) == [[]]


def test_order_empty_inputs_and_one_embedding_batch() -> None:
    spy = SpyBackend()
    photos = [event_photo((800, 600), [((10, 10, 90, 90), 5), ((200, 10, 290, 90), 6)]),
              event_photo((800, 600), []),
              event_photo((600, 800), [((300, 300, 380, 380), 5)])]
    results = analyse_images(photos, spy)
    assert [len(r) for r in results] == [2, 0, 1]
    assert spy.embed_calls == [3]  # every crop of every photo in one call; the backend chunks
    same = [f for f in results[0] if f.box[0] < 100][0]
    assert float(same.embedding @ results[2][0].embedding) == pytest.approx(1.0)
    assert analyse_images([], spy) == []


def test_real_detection_at_lower_resolution_maps_back(yunet_sface: YunetSfaceBackend,
                                                      group_photos: dict[str, Image.Image]) -> None:
    photo = group_photos["groups/human_group3.jpg"]  # large faces, still large at 800 px
    full = analyse_images([photo], yunet_sface, detect_long_side=4000)[0]
    small = analyse_images([photo], yunet_sface, detect_long_side=800)[0]
    assert len(full) == len(small) == 4
    for face in full:
        twin = max(small, key=lambda s: iou(face.box, s.box))
        assert iou(face.box, twin.box) >= 0.85
        assert float(face.embedding @ twin.embedding) >= 0.9  # crops come from the same full image
        x1, y1, x2, y2 = face.box
        assert all(x1 <= x <= x2 and y1 <= y <= y2 for x, y in face.landmarks)


# --- analyse_files: photos on disk, one full decode each ---------------------------------------


def jpeg(tmp_path: Path, name: str, img: Image.Image, **params) -> Path:  # type: ignore[no-untyped-def]
    path = tmp_path / name
    img.save(path, "JPEG", quality=95, **params)
    return path


def counting_decodes(monkeypatch) -> list[tuple[int, int]]:  # type: ignore[no-untyped-def]
    """The size of every image `analyse_files` decodes, in order."""
    sizes: list[tuple[int, int]] = []
    real_decode = pipeline.decode_image

    def decode(*args, **kwargs):  # type: ignore[no-untyped-def]
        image = real_decode(*args, **kwargs)
        sizes.append(image.size)
        return image

    monkeypatch.setattr(pipeline, "decode_image", decode)
    return sizes


def test_files_are_decoded_once_and_detected_at_the_detection_size(tmp_path, monkeypatch) -> None:
    spy = SpyBackend()
    decodes = counting_decodes(monkeypatch)
    big = jpeg(tmp_path, "big.jpg", event_photo((4000, 3000), [((400, 300, 900, 800), 1), ((3000, 2000, 3480, 2480), 2)]))
    small = jpeg(tmp_path, "small.jpg", event_photo((4000, 3000), [((400, 300, 900, 800), 1), ((3000, 2000, 3060, 2060), 2)]))
    big_result, small_result = analyse_files([big, small], spy, max_pixels=10**8, detect_long_side=1600)
    assert decodes == [(4000, 3000), (4000, 3000)]  # one full decode per photo, nothing more
    assert spy.detect_shapes == [(1200, 1600, 3), (1200, 1600, 3)]  # 4000 px: reduced 2x, then 1.25x
    # each crop is cut from a region around its face, never from the whole photo
    assert len(spy.crop_shapes) == 4 and max(max(shape[:2]) for shape in spy.crop_shapes) <= 1600
    assert sorted(f.box for f in big_result.faces)[1] == pytest.approx((3000, 2000, 3480, 2480), abs=8)
    assert sorted(f.box for f in small_result.faces)[1] == pytest.approx((3000, 2000, 3060, 2060), abs=8)
    assert big_result.size == (4000, 3000) and big_result.preview.size == (1600, 1200)  # what the detector saw
    assert spy.embed_calls == [4]  # one embedding batch for the whole call


def test_files_keep_exif_orientation_and_report_broken_photos_in_place(tmp_path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: stored 4000x3000, shown 3000x4000
    rotated = jpeg(tmp_path, "rotated.jpg", event_photo((4000, 3000), [((400, 300, 900, 800), 1)]), exif=exif)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(rotated.read_bytes()[:5000])
    good, bad = analyse_files([rotated, broken], FakeBackend(), max_pixels=10**8)
    assert isinstance(bad, ImageDecodeError) and bad.code == "corrupt_image"
    assert good.size == (3000, 4000) and good.preview.size == (1200, 1600)
    [face] = good.faces
    x1, y1, x2, y2 = face.box  # (400, 300)-(900, 800) turned 90 degrees clockwise in a 3000 px wide frame
    assert (x1, y1, x2, y2) == pytest.approx((3000 - 800, 400, 3000 - 300, 900), abs=8)


def test_files_find_the_same_real_faces_as_a_full_decode(tmp_path, yunet_sface: YunetSfaceBackend,
                                                         group_photos: dict[str, Image.Image]) -> None:
    photo = group_photos["groups/human_group1.jpg"]
    upscaled = photo.resize((photo.width * 2, photo.height * 2), Image.Resampling.BICUBIC)  # 3840 px
    path = jpeg(tmp_path, "group.jpg", upscaled)
    reference = analyse_images([Image.open(path).convert("RGB")], yunet_sface)[0]
    [result] = analyse_files([path], yunet_sface, max_pixels=10**8)
    assert len(result.faces) == len(reference) >= 12
    for face in reference:
        twin = max(result.faces, key=lambda f: iou(face.box, f.box))
        assert iou(face.box, twin.box) >= 0.8
        assert float(face.embedding @ twin.embedding) >= 0.9


class FacenetCrops(FakeBackend):
    """facenet's box-plus-margin crop (no network needed), to hold `crop_by_region` to it too."""

    def crop_faces(self, image: np.ndarray, detections: Sequence[Detection]) -> list[np.ndarray]:
        return [crop_face(image, d.box) for d in detections]


def test_crops_from_face_regions_equal_crops_from_the_whole_photo(yunet_sface: YunetSfaceBackend,
                                                                 group_photos: dict[str, Image.Image]) -> None:
    compared = 0
    for photo in group_photos.values():
        whole = np.asarray(photo)
        faces = yunet_sface.detect([whole])[0]
        for backend in (yunet_sface, FacenetCrops()):
            expected = backend.crop_faces(whole, faces)
            got = crop_by_region(photo, faces, backend)
            assert len(got) == len(expected)
            for a, b in zip(expected, got):
                assert a.shape == b.shape
                assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
            compared += len(faces)
    assert compared >= 150  # faces at the edges of the photos included


def test_full_image_hook_gets_the_faces_own_decode(tmp_path, monkeypatch) -> None:
    decodes = counting_decodes(monkeypatch)
    big = jpeg(tmp_path, "big.jpg", event_photo((4000, 3000), [((400, 300, 900, 800), 1)]))
    small = jpeg(tmp_path, "small.jpg", event_photo((4000, 3000), [((3000, 2000, 3060, 2060), 2)]))
    seen: list[tuple[int, tuple[int, int], tuple[int, int], int]] = []
    analyse_files([big, small], SpyBackend(), max_pixels=10**8,
                  use_full_image=lambda i, full, overview, faces: seen.append((i, full.size, overview.size, len(faces))))
    assert seen == [(0, (4000, 3000), (1600, 1200), 1), (1, (4000, 3000), (1600, 1200), 1)]
    assert len(decodes) == 2  # the bib reader reads on the faces' decode, no second one
