"""Enrolment with a selfie, through the API and the public page, with the real networks."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from app.db import Runner
from app.db.session import unit_of_work
from tests.app.test_matching import EVENT_PHOTOS, identity_image, jpeg, world  # noqa: F401 - fixture


def post_selfie(world, event_id: str, selfie: bytes, **fields):
    data = {"name": "Ada Runner", "email": "ada@example.com", "consent": "true", **fields}
    return world.client.post(f"/api/v1/events/{event_id}/runners", data=data,
                             files={"selfie": ("me.jpg", selfie, "image/jpeg")})


def side_by_side(*images: Image.Image, size: tuple[int, int] | None = None) -> bytes:
    width = sum(i.width for i in images) + 20 * (len(images) + 1)
    out = Image.new("RGB", size or (width, max(i.height for i in images) + 40), (200, 200, 200))
    x = 20
    for img in images:
        out.paste(img, (x, 20))
        x += img.width + 20
    return jpeg(out)


def test_enrol_returns_the_runner_and_stores_only_the_embedding(world):
    event = world.event()
    body = world.enrol(event["id"], "paul_burrell", bib=" 1234 ")
    assert set(body) >= {"id", "event_id", "name", "email", "bib", "created_at", "matches"}
    assert body["event_id"] == event["id"] and body["bib"] == "1234" and body["matches"] == 0
    assert body["email"] == "paul.burrell@example.com" and body["gallery_url"].startswith("http")
    # answered before MATCH_RUNNER ran (here right after the commit): pending, then done
    assert body["matching"] == "pending"
    assert world.client.get(f"/api/v1/runners/{body['id']}").json() == {**body, "matching": "done"}
    with unit_of_work(world.app.state.make_session) as uow:
        runner = uow.session.get(Runner, body["id"])
        vector = np.frombuffer(runner.embedding, np.float32)
        assert runner.model_id == "yunet-2023mar+sface-2021dec"
        assert vector.shape == (128,) and abs(float(np.linalg.norm(vector)) - 1) < 1e-4
    assert not any(world.settings.photos_dir.rglob("*")), "the selfie must not be stored"


def unusable_selfies(faces_dir) -> dict[str, bytes]:
    face = identity_image(faces_dir, "john_bolton", 1)
    other = identity_image(faces_dir, "tim_henman", 1)
    return {
        "not_an_image": b"GIF89a-but-not-really",
        "no_face": jpeg(Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 300, 3), np.uint8))),
        "multiple_faces": side_by_side(face, other),
        # the face shrunk to ~25 px in a large picture: found, but too small to tell people apart
        "face_too_small": side_by_side(face.resize((70, 70)), size=(640, 480)),
    }


@pytest.mark.parametrize("code", ["not_an_image", "no_face", "multiple_faces", "face_too_small"])
def test_unusable_selfies_are_refused_at_once_with_a_code(world, code):
    event = world.event()
    response = post_selfie(world, event["id"], unusable_selfies(world.faces_dir)[code])
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code and response.json()["detail"]
    assert world.client.get(f"/api/v1/events/{event['id']}").json()["stats"]["runners"] == 0


def test_a_small_face_in_the_background_is_fine(world):
    big = identity_image(world.faces_dir, "john_bolton", 1).resize((300, 300))
    small = identity_image(world.faces_dir, "tim_henman", 1).resize((90, 90))
    assert post_selfie(world, world.event()["id"], side_by_side(big, small)).status_code == 201


@pytest.mark.parametrize("consent", [None, "false", "off"])
def test_consent_is_required(world, consent):
    selfie = jpeg(identity_image(world.faces_dir, "john_bolton", 1))
    fields = {"consent": consent} if consent else {}
    data = {"name": "Ada", "email": "ada@example.com", **fields}
    response = world.client.post(f"/api/v1/events/{world.event()['id']}/runners", data=data,
                                 files={"selfie": ("me.jpg", selfie, "image/jpeg")})
    assert response.status_code == 422 and response.json()["code"] == "consent_required"


def test_bad_fields_unknown_event_and_missing_key(world):
    selfie = jpeg(identity_image(world.faces_dir, "john_bolton", 1))
    event = world.event()
    assert post_selfie(world, event["id"], selfie, email="not-an-address").json()["code"] == "validation_error"
    assert post_selfie(world, "nope", selfie).json()["code"] == "event_not_found"
    anon = world.client.post(f"/api/v1/events/{event['id']}/runners", headers={"Authorization": ""},
                             data={"name": "x", "email": "x@example.com", "consent": "true"},
                             files={"selfie": ("me.jpg", selfie, "image/jpeg")})
    assert anon.status_code == 401
    assert world.client.get("/api/v1/runners/nope").json()["code"] == "runner_not_found"


def test_delete_erases_the_runner_and_their_matches(world):
    event = world.event()
    photo_ids = world.upload(event["id"], {"e.jpg": EVENT_PHOTOS["e.jpg"]})
    world.process(list(photo_ids.values()))
    runner = world.enrol(event["id"], "john_bolton")
    assert len(world.matches(runner["id"])) == 1
    assert world.client.delete(f"/api/v1/runners/{runner['id']}").status_code == 204
    for path in (f"/api/v1/runners/{runner['id']}", f"/api/v1/runners/{runner['id']}/matches"):
        assert world.client.get(path).status_code == 404
    assert world.client.delete(f"/api/v1/runners/{runner['id']}").status_code == 404
    assert world.client.get(f"/api/v1/events/{event['id']}").json()["stats"]["matches"] == 0


def test_selfie_page_enrols_and_explains_problems_in_words(world):
    event = world.event(name="City Run")
    anon = world.client
    page = anon.get(f"/e/{event['slug']}", headers={"Authorization": ""})
    assert page.status_code == 200 and "City Run" in page.text
    assert re.search(r'<input type="checkbox" id="consent" name="consent" value="true"\s*>', page.text)  # not ticked

    def submit(selfie: bytes, **fields):
        data = {"name": "Ada Lovelace", "email": "ada@example.com", "bib": "77", "consent": "true", **fields}
        return anon.post(f"/e/{event['slug']}", data={k: v for k, v in data.items() if v is not None},
                         files={"selfie": ("me.jpg", selfie, "image/jpeg")}, headers={"Authorization": ""})

    bad = submit(unusable_selfies(world.faces_dir)["no_face"])
    assert bad.status_code == 422 and "could not find a face" in bad.text
    assert 'value="Ada Lovelace"' in bad.text and 'value="ada@example.com"' in bad.text and 'value="77"' in bad.text
    no_consent = submit(jpeg(identity_image(world.faces_dir, "john_bolton", 1)), consent=None)
    assert no_consent.status_code == 422 and "tick the box" in no_consent.text
    good = submit(jpeg(identity_image(world.faces_dir, "john_bolton", 1)))
    assert good.status_code == 200 and 'id="confirmation"' in good.text
    assert world.client.get(f"/api/v1/events/{event['id']}").json()["stats"]["runners"] == 1
    assert anon.get("/e/no-such-event").status_code == 404
