"""Enrolling again, and choosing one's face in a selfie with several: real selfies, real networks."""

from __future__ import annotations

import io

from PIL import Image

from app.db import DeliveredPhoto, Delivery, Runner
from app.db.session import unit_of_work
from app.face_backend import load_face_backend
from tests.app.test_matching import EVENT_PHOTOS, identity_image, jpeg, world  # noqa: F401 - fixture
from tests.app.test_runners import side_by_side


def enrol(world, event_id: str, selfie: bytes, email: str = "john@example.com", **fields):
    data = {"name": "John", "email": email, "consent": "true", **fields}
    return world.client.post(f"/api/v1/events/{event_id}/runners", data=data,
                             files={"selfie": ("selfie.jpg", selfie, "image/jpeg")})


def photo_names(world, runner_id: str, photo_ids: dict[str, str]) -> set[str]:
    names = {v: k for k, v in photo_ids.items()}
    return {names[m["photo_id"]] for m in world.matches(runner_id)}


def test_enrolling_again_updates_the_runner_and_recomputes_its_matches(world):
    event = world.event()
    photo_ids = world.upload(event["id"], EVENT_PHOTOS)
    world.process(list(photo_ids.values()))
    first = enrol(world, event["id"], jpeg(identity_image(world.faces_dir, "john_bolton", 1)))
    assert first.status_code == 201
    runner = first.json()
    assert photo_names(world, runner["id"], photo_ids) == {"a.jpg", "e.jpg"}

    # a.jpg was e-mailed already
    with unit_of_work(world.app.state.make_session) as uow:
        delivery = Delivery(event_id=event["id"], runner_id=runner["id"], status="sent", photo_ids=[photo_ids["a.jpg"]])
        uow.session.add(delivery)
        uow.session.flush()
        uow.session.add(DeliveredPhoto(delivery_id=delivery.id, runner_id=runner["id"], photo_id=photo_ids["a.jpg"]))

    # the same person, another selfie, the e-mail in other letter case: the same runner
    again = enrol(world, event["id"], jpeg(identity_image(world.faces_dir, "john_bolton", 4)),
                  email="John@Example.com", bib="42")
    assert again.status_code == 200, again.text
    body = again.json()
    assert body["id"] == runner["id"] and body["gallery_url"] == runner["gallery_url"]
    assert body["matching"] == "pending" and body["bib"] == "42"
    assert world.client.get(f"/api/v1/runners/{runner['id']}").json()["matching"] == "done"
    assert photo_names(world, runner["id"], photo_ids) == {"a.jpg", "e.jpg"}
    assert world.client.get(f"/api/v1/events/{event['id']}").json()["stats"]["runners"] == 1
    # only e.jpg is news: a.jpg is never e-mailed a second time
    assert world.client.post(f"/api/v1/runners/{runner['id']}/notify").json() == {"queued": 1}
    with unit_of_work(world.app.state.make_session) as uow:
        queued = uow.session.query(Delivery).filter_by(runner_id=runner["id"], status="queued").one()
        assert queued.photo_ids == [photo_ids["e.jpg"]]

    # a new template replaces the old one: the old person's photos go, the new one's come
    other = enrol(world, event["id"], jpeg(identity_image(world.faces_dir, "bill_mcbride", 1)))
    assert other.status_code == 200 and other.json()["id"] == runner["id"]
    assert photo_names(world, runner["id"], photo_ids) == {"a.jpg", "c.jpg"}
    with unit_of_work(world.app.state.make_session) as uow:
        assert uow.session.query(Runner).count() == 1


def two_faces(world) -> tuple[Image.Image, bytes]:
    image = Image.open(io.BytesIO(side_by_side(identity_image(world.faces_dir, "john_bolton", 1),
                                               identity_image(world.faces_dir, "tim_henman", 1))))
    return image, jpeg(image)


def with_exif_rotation(image: Image.Image) -> bytes:
    """The same picture stored on its side, with the EXIF tag that turns it upright again."""
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    buffer = io.BytesIO()
    image.transpose(Image.Transpose.ROTATE_90).save(buffer, "JPEG", quality=92, exif=exif)
    return buffer.getvalue()


def test_several_faces_are_listed_and_the_runner_chooses_one(world):
    event = world.event()
    photo_ids = world.upload(event["id"], {"e.jpg": EVENT_PHOTOS["e.jpg"], "b.jpg": EVENT_PHOTOS["b.jpg"]})
    world.process(list(photo_ids.values()))
    image, selfie = two_faces(world)

    refused = enrol(world, event["id"], selfie)
    assert refused.status_code == 422 and refused.json()["code"] == "multiple_faces"
    faces = refused.json()["faces"]
    assert [f["index"] for f in faces] == [0, 1]
    (l1, t1, r1, b1), (l2, *_rest) = faces[0]["box"], faces[1]["box"]
    assert 0 <= l1 < r1 <= image.width / 2 < l2 and 0 <= t1 < b1 <= image.height  # left to right, in pixels

    # the box is in the upright picture's pixels, whatever the EXIF orientation
    rotated = enrol(world, event["id"], with_exif_rotation(image)).json()
    for upright, turned in zip(faces, rotated["faces"]):
        assert all(abs(a - b) < 4 for a, b in zip(upright["box"], turned["box"])), (upright, turned)

    assert enrol(world, event["id"], selfie, face="7").json()["code"] == "invalid_face"
    chosen = enrol(world, event["id"], selfie, face="0")  # John Bolton, on the left
    assert chosen.status_code == 201, chosen.text
    assert photo_names(world, chosen.json()["id"], photo_ids) == {"e.jpg"}


def test_the_selfie_page_asks_which_face_and_enrols_with_it(world):
    event = world.event()
    _, selfie = two_faces(world)

    def submit(**fields):
        data = {"name": "John", "email": "john@example.com", "consent": "true", **fields}
        return world.client.post(f"/e/{event['slug']}", data=data, files={"selfie": ("me.jpg", selfie, "image/jpeg")},
                                 headers={"Authorization": ""})

    asked = submit()
    assert asked.status_code == 422 and "more than one face" in asked.text
    assert asked.text.count('name="face"') == 2 and 'value="john@example.com"' in asked.text
    # each face shown, cut from the selfie (and the selfie itself, kept for the next attempt)
    assert asked.text.count('class="face-choice"') == 2 and asked.text.count('src="data:image/jpeg;base64,') == 3
    done = submit(face="1")
    assert done.status_code == 200 and 'id="confirmation"' in done.text
    again = submit(face="1")
    assert again.status_code == 200 and "already" in again.text
    assert world.client.get(f"/api/v1/events/{event['id']}").json()["stats"]["runners"] == 1


def test_a_photo_deleted_while_the_networks_run_leaves_no_files_and_no_error(world, monkeypatch):
    from app.services import processing

    event = world.event()
    photo_id = world.upload(event["id"], {"e.jpg": EVENT_PHOTOS["e.jpg"]})["e.jpg"]
    real = processing.analyse_files

    def delete_meanwhile(*args, **kwargs):
        assert world.client.delete(f"/api/v1/photos/{photo_id}").status_code == 204
        return real(*args, **kwargs)

    monkeypatch.setattr(processing, "analyse_files", delete_meanwhile)
    state = world.app.state
    ctx = processing.ProcessingContext(world.settings, state.make_session, state.store,
                                       load_face_backend(world.settings), world.sender)
    assert processing.process_photos(ctx, [photo_id], task_id="t") == {photo_id: "deleted"}
    assert not [p for p in world.settings.photos_dir.rglob("*") if p.is_file()]
