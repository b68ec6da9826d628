"""Listing (newest first, cursor pages), search, and deletion of events and photos with their files."""

from __future__ import annotations

import pytest

from app.db import DeliveredPhoto, Delivery, Face, Match, Photo, Runner
from app.db.session import unit_of_work
from app.storage import LocalPhotoStore
from tests.app.test_notify import make_match


def pages(client, path: str, limit: int, **params) -> list[list[dict]]:
    """Every page of a list, following next_cursor."""
    out, cursor = [], None
    while True:
        query = {"limit": limit, **params, **({"cursor": cursor} if cursor else {})}
        response = client.get(path, params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        out.append(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return out


def test_events_newest_first_in_cursor_pages(client):
    ids = [client.post("/api/v1/events", json={"name": f"Run {i}"}).json()["id"] for i in range(5)]
    got = pages(client, "/api/v1/events", 2)
    assert [len(p) for p in got] == [2, 2, 1]
    assert [e["id"] for p in got for e in p] == ids[::-1]
    assert set(got[0][0]) >= {"id", "name", "slug", "match_threshold", "created_at", "stats"}
    bad = client.get("/api/v1/events", params={"cursor": "not-ours"})
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_cursor"


class Rows:
    """An event's rows written directly (no CNNs): photos with files, faces, runners, matches."""

    def __init__(self, client, event_id: str) -> None:
        self.client, self.event_id = client, event_id
        self.sessions = client.app.state.make_session
        self.store: LocalPhotoStore = client.app.state.store

    def photo(self, name: str) -> Photo:
        keys = {kind: f"events/{self.event_id}/{kind}/{name}.jpg" for kind in ("originals", "previews", "thumbs")}
        for key in keys.values():
            self.store.put_bytes(key, b"jpeg bytes")
        with unit_of_work(self.sessions) as uow:
            photo = Photo(event_id=self.event_id, filename=f"{name}.jpg", sha256=name.ljust(64, "0"), size_bytes=10,
                          content_type="image/jpeg", status="done", storage_key=keys["originals"],
                          preview_key=keys["previews"], thumb_key=keys["thumbs"])
            uow.session.add(photo)
        return photo

    def runner(self, name: str, email: str, bib: str | None = None) -> Runner:
        with unit_of_work(self.sessions) as uow:
            runner = Runner(event_id=self.event_id, name=name, email=email, bib=bib)
            uow.session.add(runner)
        return runner

    def match(self, runner: Runner, photo: Photo, similarity: float) -> Match:
        return make_match(self.sessions, runner=runner, photo=photo, similarity=similarity)


@pytest.fixture
def rows(client) -> Rows:
    return Rows(client, client.post("/api/v1/events", json={"name": "City Run"}).json()["id"])


def test_runners_are_searched_by_name_email_or_bib_and_paged(client, rows):
    ada = rows.runner("Ada Lovelace", "Ada@Example.org", bib="101")
    bob = rows.runner("Bob Lovelace", "bob@example.org", bib="1010")
    carl = rows.runner("Carl 100%", "carl@example.org")
    path = f"/api/v1/events/{rows.event_id}/runners"

    def found(q: str) -> list[str]:
        return [r["id"] for p in pages(client, path, 1, q=q) for r in p]

    assert found("lovelace") == [bob.id, ada.id]  # newest first
    assert found("ada@example") == [ada.id]
    assert found("101") == [ada.id]  # a bib is matched whole: not 1010
    assert found("100%") == [carl.id]  # LIKE wildcards are plain characters
    assert found("") == [carl.id, bob.id, ada.id]
    everyone = client.get(path).json()
    assert everyone["next_cursor"] is None and everyone["items"][0]["matching"] == "pending"


def test_a_runners_matches_come_best_first_in_pages(client, rows):
    runner = rows.runner("Ada", "ada@example.org")
    similarities = [0.7, 0.9, 0.8, 0.8, 0.65]
    for i, similarity in enumerate(similarities):
        rows.match(runner, rows.photo(f"p{i}"), similarity)
    got = pages(client, f"/api/v1/runners/{runner.id}/matches", 2)
    assert [len(p) for p in got] == [2, 2, 1]
    assert [m["similarity"] for p in got for m in p] == pytest.approx(sorted(similarities, reverse=True))
    assert len({m["photo_id"] for p in got for m in p}) == 5
    whole = client.get(f"/api/v1/runners/{runner.id}/matches").json()  # v1: one answer, best first
    assert len(whole["items"]) == 5 and whole["next_cursor"] is None


def test_deleting_a_photo_removes_its_files_faces_and_matches(client, rows):
    runner = rows.runner("Ada", "ada@example.org")
    photo, kept = rows.photo("gone"), rows.photo("kept")
    rows.match(runner, photo, 0.9)
    rows.match(runner, kept, 0.8)
    assert client.delete(f"/api/v1/photos/{photo.id}").status_code == 204
    assert client.get(f"/api/v1/photos/{photo.id}").status_code == 404
    assert client.delete(f"/api/v1/photos/{photo.id}").status_code == 404
    for key in (photo.storage_key, photo.preview_key, photo.thumb_key):
        assert not rows.store.exists(key)
    assert rows.store.exists(kept.storage_key)
    assert [m["photo_id"] for m in client.get(f"/api/v1/runners/{runner.id}/matches").json()["items"]] == [kept.id]
    stats = client.get(f"/api/v1/events/{rows.event_id}").json()["stats"]
    assert (stats["photos"], stats["faces"], stats["matches"]) == (1, 1, 1)


def test_deleting_an_event_removes_everything_in_it_and_nothing_else(client, rows):
    other = Rows(client, client.post("/api/v1/events", json={"name": "Other Run"}).json()["id"])
    other_photo = other.photo("theirs")
    runner = rows.runner("Ada", "ada@example.org")
    photo = rows.photo("ours")
    rows.match(runner, photo, 0.9)
    with unit_of_work(rows.sessions) as uow:
        delivery = Delivery(event_id=rows.event_id, runner_id=runner.id, status="sent", photo_ids=[photo.id])
        uow.session.add(delivery)
        uow.session.flush()
        uow.session.add(DeliveredPhoto(delivery_id=delivery.id, runner_id=runner.id, photo_id=photo.id))

    assert client.delete(f"/api/v1/events/{rows.event_id}").status_code == 204
    assert client.get(f"/api/v1/events/{rows.event_id}").status_code == 404
    assert client.get(f"/api/v1/runners/{runner.id}").status_code == 404
    assert client.get(f"/api/v1/photos/{photo.id}").status_code == 404
    assert not (rows.store.root / "events" / rows.event_id).exists()
    with unit_of_work(rows.sessions) as uow:
        for table in (Photo, Face, Runner, Match, Delivery):
            assert uow.session.query(table).filter_by(event_id=rows.event_id).count() == 0, table
        assert uow.session.query(DeliveredPhoto).count() == 0
    assert other.store.exists(other_photo.storage_key)
    assert client.get(f"/api/v1/events/{other.event_id}").json()["stats"]["photos"] == 1
