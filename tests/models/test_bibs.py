"""The bib reader: the real PP-OCR networks on the real race photos and rendered bibs, and the
geometry and filters of models/bibs.py on hand-made reads."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest

from models import bibs
from models.bib_reader import PPOCR_DET, PPOCR_REC, PpOcrReader, TextBox
from models.image import decode_image
from models.pipeline import detect_faces
from models.weights import WeightsError, sha256_of, verified_path
from tests.bib_images import RACE_LABELS, bib_scene
from tests.models.helpers import MAX_PIXELS, tampered_copy


@pytest.fixture(scope="module")
def reader() -> PpOcrReader:
    r = PpOcrReader()
    r.load()
    return r


def read(photo, backend, reader):
    faces = detect_faces([photo], backend)[0]
    return faces, bibs.read_bibs(photo, [f.box for f in faces], reader)


def test_weights_are_the_wheels_files_and_a_tampered_one_is_refused(tmp_path: Path) -> None:
    for weight in (PPOCR_DET, PPOCR_REC):
        assert sha256_of(verified_path(weight)) == weight.sha256
    root = tampered_copy(tmp_path, (PPOCR_DET, PPOCR_REC), PPOCR_REC, at=5000)
    with pytest.raises(WeightsError, match="PP-OCRv6_rec_small"):
        PpOcrReader(weights_root=root).load()


def test_loading_and_reading_fetch_nothing(monkeypatch, shared_faces: Path) -> None:
    import rapidocr.utils.download_file as download

    def refuse(*args, **kwargs):
        raise AssertionError("the bib reader tried the network")

    monkeypatch.setattr(download.DownloadFile, "run", classmethod(refuse))
    monkeypatch.setattr(socket.socket, "connect", refuse)
    r = PpOcrReader()
    r.load()
    r.load()  # idempotent
    photo = np.asarray(decode_image(shared_faces / "groups" / "race_pietro_test2.jpg", max_pixels=MAX_PIXELS))
    assert r.recognise([photo[230:285, 125:215]])[0][0] == "471"


def test_real_race_photos_read_their_bibs_and_nothing_else(shared_faces: Path, yunet_sface, reader) -> None:
    found = {}
    for name, labels in RACE_LABELS.items():
        photo = decode_image(shared_faces / "groups" / name, max_pixels=MAX_PIXELS)
        faces, reads = read(photo, yunet_sface, reader)
        numbers = {r.number for r in reads}
        assert numbers <= labels, (name, numbers)  # no word, year or sponsor text read as a bib
        found[name] = numbers
        for r in reads:
            x1, y1, x2, y2 = r.box
            assert 0 <= x1 < x2 <= photo.width and 0 <= y1 < y2 <= photo.height and 0.8 <= r.score <= 1
    assert sum(len(v) for v in found.values()) >= 7, found  # of 8; 582 is a far runner, face unseen
    # "21KM" and "Maratona Brasilia" on the shirt are not bibs; 2273 is, and below his face
    assert found["race_pietro_test4.jpg"] == {"2273"}


def test_reads_belong_to_the_face_above_them(shared_faces: Path, yunet_sface, reader) -> None:
    photo = decode_image(shared_faces / "groups" / "race_pietro_test1.jpg", max_pixels=MAX_PIXELS)
    faces, reads = read(photo, yunet_sface, reader)
    for r in reads:
        if r.number in {"609", "61282"}:
            face = faces[r.face].box
            assert face[0] - face[3] + face[1] < r.centre[0] < face[2] + face[3] - face[1]  # under it
            assert r.centre[1] > face[3]


def test_rendered_bibs_on_real_photos(shared_faces: Path, yunet_sface, reader) -> None:
    rng = np.random.default_rng(7)
    hits = total = wrong = 0
    for name in ("human_group2.jpg", "dlib_voc_2007_007763.jpg", "linzaer_9.jpg"):
        base = decode_image(shared_faces / "groups" / name, max_pixels=MAX_PIXELS)
        boxes = [f.box for f in detect_faces([base], yunet_sface)[0]]
        photo, labels = bib_scene(base, boxes, rng)
        numbers = {r.number for r in read(photo, yunet_sface, reader)[1]}
        wanted = {lb.number for lb in labels}
        hits, total, wrong = hits + len(numbers & wanted), total + len(wanted), wrong + len(numbers - wanted)
    assert total >= 8 and hits >= 0.85 * total and wrong <= 1, (hits, total, wrong)


# --- geometry and filters, no network -------------------------------------------------------------


def make_read(number, box, score=0.99, face=None):
    return bibs.BibRead(number, box, score, face, box[3] - box[1])


def test_torso_region_spans_the_measured_bib_distances_and_is_clipped() -> None:
    face = (100, 100, 140, 150)  # 50 px tall, centre (120, 125)
    x1, y1, x2, y2 = bibs.torso_region(face, (1000, 1000))
    for k in bibs.BIB_BELOW_RANGE:  # 5th-95th percentile of the bib centre's distance
        assert y1 < 125 + k * 50 < y2
    assert x1 < 120 - 50 and x2 > 120 + 50
    assert bibs.torso_region(face, (1000, 300))[3] == 300
    assert bibs.torso_region((100, 990, 140, 1040), (1000, 1000)) is None  # off the photo


def test_small_numerals_on_the_same_card_are_dropped_not_a_neighbours_bib() -> None:
    bib = make_read("1234", (100, 100, 220, 150))  # 50 px numerals
    year = make_read("2026", (110, 70, 140, 82))  # 12 px, just above them
    gear = make_read("77", (190, 160, 210, 175))  # 15 px, just below
    neighbour = make_read("56", (300, 110, 330, 140))  # another runner's smaller bib, beside it
    kept = {r.number for r in bibs.drop_small_numerals([bib, year, gear, neighbour])}
    assert kept == {"1234", "56"}


def test_duplicates_keep_the_most_confident_read() -> None:
    a = make_read("609", (10, 10, 60, 40), score=0.95)
    b = make_read("60", (12, 10, 50, 40), score=0.9)
    c = make_read("609", (300, 10, 350, 40), score=0.99)
    assert bibs.merge_duplicates([b, a, c]) == [c, a]


def test_attachment_prefers_the_face_right_above_and_drops_tiny_text_for_the_face() -> None:
    faces = [(100, 100, 140, 150), (200, 100, 240, 150)]
    on_second = make_read("42", (195, 220, 245, 250))
    between = make_read("7", (140, 220, 180, 250))  # in both regions: the nearer one's
    attached = bibs.attach_to_faces([on_second, between], faces)
    assert [r.face for r in attached] == [1, 0]
    tiny = bibs.attach_to_faces([make_read("2026", (110, 220, 130, 226))], faces)
    assert tiny[0].face == 0 and bibs.drop_small_for_face(tiny, faces) == []


class ScriptedReader:
    """Detects one line per image and 'reads' the given texts: exercises read_bibs' filters."""

    model_id = "scripted"

    def __init__(self, texts):
        self.texts = list(texts)

    def load(self):
        pass

    def detect(self, images):
        return [[TextBox(np.array([[4, 4], [60, 4], [60, 24], [4, 24]], np.float32), 0.9)] for _ in images]

    def recognise(self, crops):
        return [self.texts.pop(0) for _ in crops]


def test_only_confident_digit_lines_of_one_to_six_digits_are_bibs() -> None:
    from PIL import Image

    photo = Image.new("RGB", (400, 300), (128, 128, 128))
    for text, kept in [(("1234", 0.99), True), (("12 34", 0.99), True), (("21KM", 0.99), False),
                       (("1234567", 0.99), False), (("1234", 0.5), False), (("", 0.99), False)]:
        reads = bibs.read_bibs(photo, [], ScriptedReader([text]), whole_long_side=400)
        assert bool(reads) == kept, text


def test_one_spelling_per_bib_number() -> None:
    assert [bibs.canonical_bib(t) for t in ("0582", "582", " 5 82 ", "000", "A12", "")] == [
        "582", "582", "582", "0", "A12", ""]


def test_openvino_detector_reads_what_onnxruntime_reads(shared_faces: Path, yunet_sface, reader) -> None:
    assert reader.det_engine == "openvino"  # the default on CPU
    onnxruntime = PpOcrReader(det_engine="onnxruntime")
    onnxruntime.load()
    compared = 0
    for name in RACE_LABELS:
        photo = decode_image(shared_faces / "groups" / name, max_pixels=MAX_PIXELS)
        faces = detect_faces([photo], yunet_sface)[0]
        ours = bibs.read_bibs(photo, [f.box for f in faces], reader)
        theirs = bibs.read_bibs(photo, [f.box for f in faces], onnxruntime)
        assert [(r.number, r.face) for r in ours] == [(r.number, r.face) for r in theirs], name
        assert all(abs(a.score - b.score) < 1e-3 for a, b in zip(ours, theirs))
        compared += len(ours)
    assert compared >= 7
