"""Bib numbers through the API: start lists (good and bad rows, broken files), search by bib,
and a start-list runner found by bib, then by the face their bib was read on, e-mailed, and
completed by a selfie. Photos go through the worker's real stage with the real face networks
and the real bib reader."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.db import Runner
from app.db.session import unit_of_work
from app.services.processing import ProcessingContext, process_photos
from app.face_backend import load_face_backend
from models.bib_reader import get_reader
from models.pipeline import detect_faces
from tests.app.test_matching import identity_image, jpeg, world  # noqa: F401  (fixture)
from tests.bib_images import paste_card
from worker.dispatch import MATCH_RUNNER


def upload_csv(world, event_id: str, text: str | bytes, filename: str = "start.csv"):
    data = text.encode() if isinstance(text, str) else text
    return world.client.post(f"/api/v1/events/{event_id}/start-list", files={"file": (filename, data, "text/csv")})


def runners_of(world, event_id: str) -> dict[str, dict]:
    items = world.client.get(f"/api/v1/events/{event_id}/runners?limit=500").json()["items"]
    return {r["bib"]: r for r in items}


def test_a_start_list_creates_and_updates_runners_by_bib_and_rejects_bad_rows(world):
    event = world.event()
    first = upload_csv(world, event["id"], "bib,name,email\n101,Ann Lee,ann@example.com\n202,Bob,\n303,,\n")
    assert first.status_code == 200, first.text
    assert first.json() == {"created": 3, "updated": 0, "rejected": []}
    runners = runners_of(world, event["id"])
    assert runners["202"]["email"] is None and runners["303"]["name"] == "Runner 303"
    assert all(r["matches"] == 0 for r in runners.values())
    queued = [args[0] for name, args in world.sender.sent if name == MATCH_RUNNER]
    assert sorted(queued) == sorted(r["id"] for r in runners.values())  # matched by bib alone

    # semicolons (European spreadsheets), a header in another case and column order
    second = upload_csv(world, event["id"], (
        "Email;BIB;Name\n"
        "bob@example.com;202;Bob Stone\n"      # line 2: updates 202 by bib
        ";0404;Dee\n"                          # line 3: new (bib 404: leading zeros dropped)
        "x@example.com;;Nobody\n"              # line 4: missing_bib
        "y@example.com;12a;Eve\n"              # line 5: invalid_bib
        "not-an-address;505;Fay\n"             # line 6: invalid_email
        "z@example.com;404;Gus\n"              # line 7: duplicate_bib (line 3)
        "ann@example.com;606;Ann again\n"      # line 8: email_taken (ann wears 101)
        "q@example.com;707\n"                  # line 9: wrong_field_count
        "\n"                                   # blank lines are skipped
        "bob@example.com;808;Bob twice\n"      # line 11: duplicate_email (line 2)
    ))
    assert second.status_code == 200, second.text
    body = second.json()
    assert (body["created"], body["updated"]) == (1, 1)
    assert [(r["line"], r["code"]) for r in body["rejected"]] == [
        (4, "missing_bib"), (5, "invalid_bib"), (6, "invalid_email"), (7, "duplicate_bib"),
        (8, "email_taken"), (9, "wrong_field_count"), (11, "duplicate_email")]
    assert all(r["detail"] for r in body["rejected"])
    runners = runners_of(world, event["id"])
    assert set(runners) == {"101", "202", "303", "404"}
    assert (runners["202"]["name"], runners["202"]["email"]) == ("Bob Stone", "bob@example.com")
    assert runners["202"]["id"] == first_id(world, event["id"], "202")


def first_id(world, event_id: str, bib: str) -> str:
    with unit_of_work(world.app.state.make_session) as uow:
        return uow.session.query(Runner).filter_by(event_id=event_id, bib=bib).one().id


@pytest.mark.parametrize("data,code", [
    (b"", "malformed_csv"),
    (b"name,email\nAnn,ann@example.com\n", "missing_bib_column"),
    ("bib,name\n1,Ann\n2,B\xe9a\n".encode("latin-1"), "malformed_csv"),  # not UTF-8
    (b'bib,name\n1,"Ann\n2,Bob\n', "malformed_csv"),  # a quote never closed
    (b"bib,name\n1,Ann\x00\n", "malformed_csv"),
    (b"bib,bib\n1,2\n", "malformed_csv"),
])
def test_a_broken_file_is_refused_whole_and_imports_nothing(world, data, code):
    event = world.event()
    response = upload_csv(world, event["id"], data)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code
    assert runners_of(world, event["id"]) == {}


def test_start_list_needs_a_file_and_a_known_event(world):
    event = world.event()
    assert world.client.post(f"/api/v1/events/{event['id']}/start-list").status_code == 422
    assert upload_csv(world, "0" * 26, "bib\n1\n").status_code == 404


# --- the whole path: photos with bibs, search, start-list runners, notify, selfie -------------------


def photo_with_bib(world, people: list[tuple[str, int, str | None]], rng, faceless_bib: str | None = None) -> bytes:
    """Identity photos side by side on a tall canvas; a bib card under each face that has a number."""
    room = 300 if faceless_bib else 0  # the faceless bib stands right of everyone, under no face
    canvas = Image.new("RGB", (230 * len(people) + 40 + room, 520), (110, 120, 115))
    for k, (person, index, _) in enumerate(people):
        img = identity_image(world.faces_dir, person, index)
        canvas.paste(img.resize((180, 180)), (20 + 230 * k, 20))
    backend = load_face_backend(world.settings)
    found = detect_faces([canvas], backend)[0]
    # each identity photo's main face (LFW photos show bits of other people at their edges)
    faces = [max((f for f in found if 20 + 230 * k <= (f.box[0] + f.box[2]) / 2 < 200 + 230 * k),
                 key=lambda f: f.height) for k in range(len(people))]
    for face, (_, _, number) in zip(faces, people):
        if number:
            x1, y1, x2, y2 = face.box
            h = y2 - y1
            paste_card(canvas, number, ((x1 + x2) / 2, (y1 + y2) / 2 + 2.2 * h), int(2.0 * h), rng)
    if faceless_bib:
        paste_card(canvas, faceless_bib, (canvas.width - 140, 300), 200, rng)
    return jpeg(canvas)


def process_with_bibs(world, photo_ids: list[str]) -> None:
    state = world.app.state
    ctx = ProcessingContext(world.settings, state.make_session, state.store, load_face_backend(world.settings),
                            world.sender, bib_reader=get_reader())
    assert set(process_photos(ctx, photo_ids, task_id="test").values()) == {"done"}


def upload(world, event_id: str, photos: dict[str, bytes]) -> dict[str, str]:
    files = [("files", (name, data, "image/jpeg")) for name, data in photos.items()]
    body = world.client.post(f"/api/v1/events/{event_id}/photos", files=files).json()
    return {p["filename"]: p["id"] for p in body["photos"]}


def test_bibs_are_read_searched_and_find_start_list_runners(world):
    rng = np.random.default_rng(3)
    event = world.event()
    listed = upload_csv(world, event["id"], "bib,name,email\n4821,John,john.bolton@example.com\n377,Cy,\n")
    assert listed.json()["created"] == 2
    photos = {
        "a.jpg": photo_with_bib(world, [("john_bolton", 2, "4821"), ("tiger_woods", 1, "95")], rng),
        "b.jpg": photo_with_bib(world, [("john_bolton", 3, None), ("spencer_abraham", 1, None)], rng),
        "c.jpg": photo_with_bib(world, [("paul_burrell", 2, None)], rng, faceless_bib="377"),
    }
    ids = upload(world, event["id"], photos)
    process_with_bibs(world, list(ids.values()))

    # the photo JSON: each read with its box, score and face
    a = world.client.get(f"/api/v1/photos/{ids['a.jpg']}").json()
    by_number = {b["number"]: b for b in a["bibs"]}
    assert set(by_number) == {"4821", "95"}, a["bibs"]
    face_ids = [f["id"] for f in sorted(a["faces"], key=lambda f: f["box"][0])]
    assert by_number["4821"]["face_id"] == face_ids[0] and by_number["95"]["face_id"] == face_ids[1]
    x1, y1, x2, y2 = by_number["4821"]["box"]
    assert 0 <= x1 < x2 <= a["width"] and a["faces"][0]["box"][3] < y1 < y2 <= a["height"]
    c = world.client.get(f"/api/v1/photos/{ids['c.jpg']}").json()
    assert [(b["number"], b["face_id"]) for b in c["bibs"]] == [("377", None)]

    # search by bib: exactly the photos where it was read; nobody's number finds nothing
    def search(number: str) -> set[str]:
        response = world.client.get(f"/api/v1/events/{event['id']}/photos?bib={number}")
        assert response.status_code == 200, response.text
        return {p["filename"] for p in response.json()["items"]}

    assert search("4821") == {"a.jpg"} and search("377") == {"c.jpg"} and search("95") == {"a.jpg"}
    assert search("0377") == {"c.jpg"}  # leading zeros are one spelling of the number
    assert search("9999") == set() and search("482") == set()
    assert world.client.get(f"/api/v1/events/{event['id']}/photos?bib=12ab").status_code == 422

    # start-list runners: John by his bib on a.jpg, and by the face it was read on in b.jpg (bib
    # hidden there); Cy by his bib alone, no face
    runners = runners_of(world, event["id"])
    names = {v: k for k, v in ids.items()}
    john = world.matches(runners["4821"]["id"])
    assert {(names[m["photo_id"]], m["source"]) for m in john} == {("a.jpg", "face+bib"), ("b.jpg", "face")}
    cy = world.matches(runners["377"]["id"])
    assert [(names[m["photo_id"]], m["face_id"], m["similarity"], m["source"]) for m in cy] == [
        ("c.jpg", None, None, "bib")]

    # notify: John has an e-mail; Cy has none and is not queued
    assert world.client.post(f"/api/v1/events/{event['id']}/notify").json() == {"queued": 1}

    # John sends a selfie with the e-mail of his start-list row: the same runner, now with a face
    again = world.client.post(f"/api/v1/events/{event['id']}/runners", data={
        "name": "John Bolton", "email": "john.bolton@example.com", "consent": "true", "bib": "4821"},
        files={"selfie": ("s.jpg", jpeg(identity_image(world.faces_dir, "john_bolton", 1)), "image/jpeg")})
    assert again.status_code in (200, 201), again.text
    assert again.json()["id"] == runners["4821"]["id"]
    john = world.matches(runners["4821"]["id"])
    assert {(names[m["photo_id"]], m["source"]) for m in john} == {("a.jpg", "face+bib"), ("b.jpg", "face")}
    # Cy, imported without an e-mail, is completed by a selfie that gives his bib
    cy_selfie = world.client.post(f"/api/v1/events/{event['id']}/runners", data={
        "name": "Cy", "email": "cy@example.com", "consent": "true", "bib": "377"},
        files={"selfie": ("s.jpg", jpeg(identity_image(world.faces_dir, "paul_burrell", 1)), "image/jpeg")})
    assert cy_selfie.json()["id"] == runners["377"]["id"]
    # his face matches on c.jpg and his number was read there (on no face): both sources
    assert {(names[m["photo_id"]], m["source"]) for m in world.matches(runners["377"]["id"])} == {("c.jpg", "face+bib")}

    # the runner page: "find my photos by bib" only where the organiser allows it
    slug = event["slug"]
    assert 'id="bib-search"' not in world.client.get(f"/e/{slug}").text
    assert world.client.get(f"/e/{slug}/bib?number=4821").status_code == 404
    assert world.client.get(f"/e/{slug}/bib/4821/photos/{ids['a.jpg']}/thumb").status_code == 404
    patched = world.client.patch(f"/api/v1/events/{event['id']}", json={"bib_search_public": True})
    assert patched.status_code == 200 and patched.json()["bib_search_public"] is True
    assert 'id="bib-search"' in world.client.get(f"/e/{slug}").text
    found = world.client.get(f"/e/{slug}/bib?number=4821")
    assert found.status_code == 200 and found.text.count('class="photo"') == 1 and ids["a.jpg"] in found.text
    for private in ("John", "john.bolton", "Cy", runners["4821"]["id"]):  # photos only, no runner's data
        assert private not in found.text
    thumb = world.client.get(f"/e/{slug}/bib/4821/photos/{ids['a.jpg']}/thumb")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert world.client.get(f"/e/{slug}/bib/4821/photos/{ids['b.jpg']}/preview").status_code == 404  # not read there
    assert world.client.get(f"/e/{slug}/bib/4821/photos/{ids['a.jpg']}/exif").status_code == 404
    nothing = world.client.get(f"/e/{slug}/bib?number=9999")
    assert nothing.status_code == 200 and 'class="photo"' not in nothing.text
    assert world.client.get(f"/e/{slug}/bib?number=abc").status_code == 422
