"""Matching: the assignment rules on synthetic vectors, then real faces both ways round.

Event photos are built from ../shared/faces: other photos of the enrolled people pasted next to
strangers (people never enrolled, and group photos). Photos go through the worker's real stage
(process_photos with the real networks); selfies through the API with the real networks.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.db.session import unit_of_work
from app.face_backend import load_face_backend
from app.main import create_app
from app.services import matching
from app.services.processing import ProcessingContext, process_photos
from tests.conftest import new_api_key
from app.jobs import MATCH_RUNNER, REMATCH_EVENT
from worker.tasks import run_rematch

# --- the assignment rules (pure numpy) ----------------------------------------------------------


def unit(rng: np.random.Generator, n: int, dim: int = 16) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def pairs(result: matching.Assignment) -> set[tuple[int, int]]:
    return set(zip(result.face.tolist(), result.runner.tolist()))


def test_each_face_goes_to_its_most_similar_runner_above_threshold():
    sims = np.array([[0.9, 0.6], [0.5, 0.55], [0.3, 0.2]], np.float32)
    result = matching.assign(sims, np.array([0, 1, 2]), 0.5)
    assert pairs(result) == {(0, 0), (1, 1)}  # face 2 is nobody: open set, never "the nearest"
    assert result.similarity.tolist() == pytest.approx([0.9, 0.55])  # best first


def test_a_runner_gets_only_their_best_face_of_a_photo():
    sims = np.array([[0.7, 0.0], [0.8, 0.6], [0.75, 0.0]], np.float32)
    result = matching.assign(sims, np.array([1, 1, 2]), 0.5)
    # faces 0 and 1 are in the same photo: runner 0 keeps face 1; face 0 goes to nobody, and
    # face 1 is not handed to its second choice either (a face has one runner: its best).
    assert pairs(result) == {(1, 0), (2, 0)}


def test_blocked_pairs_never_match_and_the_face_may_go_to_the_next_runner():
    sims = np.array([[0.9, 0.7]], np.float32)
    result = matching.assign(sims, np.array([0]), 0.5, blocked=(np.array([0]), np.array([0])))
    assert pairs(result) == {(0, 1)}
    assert sims[0, 0] == pytest.approx(0.9)  # the caller's matrix is not modified


def test_empty_inputs():
    assert len(matching.assign(np.zeros((0, 3), np.float32), np.zeros(0), 0.5).face) == 0
    assert len(matching.assign(np.zeros((4, 0), np.float32), np.arange(4), 0.5).face) == 0


def test_random_matrices_keep_both_unique_rules():
    rng = np.random.default_rng(1)
    faces, runners = unit(rng, 400), unit(rng, 30)
    runners[:10] = faces[:10] + 0.1 * unit(rng, 10)  # some true matches
    photos = rng.integers(0, 40, 400)
    result = matching.assign(faces @ runners.T, photos, 0.3)
    assert len(set(result.face.tolist())) == len(result.face)
    slots = list(zip(result.runner.tolist(), photos[result.face].tolist()))
    assert len(set(slots)) == len(slots)
    assert (result.similarity >= 0.3).all() and (np.diff(result.similarity) <= 0).all()


def test_similarities_kept_over_the_threshold_give_the_full_matrix_assignment(monkeypatch):
    """The database side keeps only the runner columns that reach the threshold for some face,
    computed a few faces at a time; `assign` and the bib rule's candidates come out the same."""
    from app.services import bib_matching

    monkeypatch.setattr(matching, "FACE_ROWS_PER_PRODUCT", 7)  # blocks that cut photos apart
    rng = np.random.default_rng(5)
    faces, runners = unit(rng, 90, 32), unit(rng, 400, 32)
    faces[::3] = runners[rng.integers(0, 400, 30)] + 0.3 * unit(rng, 30, 32)  # some runners appear
    faces /= np.linalg.norm(faces, axis=1, keepdims=True)
    photos = np.repeat(np.arange(15), 6)
    full = faces @ runners.T
    ids = np.array([f"r{i:03d}" for i in range(400)], object)
    face_ids = np.array([f"f{i:03d}" for i in range(90)], object)
    for threshold in (0.5, 0.8, 1.5):
        columns, kept = matching._over_threshold(faces, matching.RunnerSet(ids, np.ascontiguousarray(runners.T)),
                                                 threshold)
        assert kept.shape[1] == len(columns) < 400
        rows, cols = np.nonzero(full >= threshold)
        blocked = (rows[::4], cols[::4])  # "not me" on a quarter of the candidate pairs
        kept_blocked = (blocked[0], np.searchsorted(columns, blocked[1]))
        want, got = matching.assign(full, photos, threshold, blocked), matching.assign(kept, photos, threshold,
                                                                                        kept_blocked)
        assert (want.face.tolist(), ids[want.runner].tolist()) == (got.face.tolist(), ids[columns][got.runner].tolist())
        assert np.allclose(want.similarity, got.similarity)
        # the same pairs; similarities to float32 rounding (BLAS sums a block of rows in its own order)
        want_pairs = bib_matching.candidates_from(full, face_ids, photos, ids, threshold)
        got_pairs = bib_matching.candidates_from(kept, face_ids, photos, ids[columns], threshold)
        assert [(c.photo_id, c.face_id, c.runner_id) for c in want_pairs] == [
            (c.photo_id, c.face_id, c.runner_id) for c in got_pairs]
        assert np.allclose([c.similarity for c in want_pairs], [c.similarity for c in got_pairs], rtol=0, atol=1e-6)


# --- real faces -----------------------------------------------------------------------------------

ENROLLED = ["bill_mcbride", "john_bolton", "paul_burrell", "michael_jackson"]  # selfie: photo 1
EVENT_PHOTOS = {  # name -> what is pasted side by side; "group:" photos and other people are strangers
    "a.jpg": ["bill_mcbride/2", "john_bolton/3", "tiger_woods/1"],
    "b.jpg": ["paul_burrell/2", "spencer_abraham/1", "group:dlib_voc_2008_002079"],
    "c.jpg": ["michael_jackson/2", "bill_mcbride/3"],
    "d.jpg": ["juan_carlos_ferrero/1", "tiger_woods/2", "group:human_group1"],
    "e.jpg": ["john_bolton/2", "paul_burrell/3", "michael_jackson/3"],
}
EXPECTED = {"bill_mcbride": {"a.jpg", "c.jpg"}, "john_bolton": {"a.jpg", "e.jpg"},
            "paul_burrell": {"b.jpg", "e.jpg"}, "michael_jackson": {"c.jpg", "e.jpg"}}


def identity_image(faces_dir: Path, person: str, index: int) -> Image.Image:
    image = Image.open(faces_dir / "identities" / person / f"{index}.jpg").convert("RGB")
    image.thumbnail((150, 150))  # a few identity photos are full size; the LFW copies are 150 px
    return image


def canvas(faces_dir: Path, parts: list[str], scale: float = 1.2) -> bytes:
    """A JPEG with the given identity photos ("person/n") and group photos pasted in a row."""
    images = []
    for part in parts:
        if part.startswith("group:"):
            img = Image.open(faces_dir / "groups" / f"{part[6:]}.jpg").convert("RGB")
            img.thumbnail((700, 700))
        else:
            person, index = part.split("/")
            img = identity_image(faces_dir, person, int(index))
            img = img.resize((round(img.width * scale), round(img.height * scale)))
        images.append(img)
    out = Image.new("RGB", (sum(i.width for i in images) + 30 * (len(images) + 1),
                            max(i.height for i in images) + 60), (120, 130, 125))
    x = 30
    for img in images:
        out.paste(img, (x, 30))
        x += img.width + 30
    return jpeg(out)


def jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=92)
    return buf.getvalue()


class InlineSender:
    """Runs MATCH_RUNNER at once, as the worker task does (its own unit of work); records the rest."""

    def __init__(self, make_session) -> None:
        self.make_session = make_session
        self.sent: list[tuple[str, tuple]] = []

    def send(self, task_name: str, *args: object) -> None:
        self.sent.append((task_name, args))
        if task_name == MATCH_RUNNER:
            with unit_of_work(self.make_session, self) as uow:  # as the task: it sends webhooks
                matching.match_runner(uow, *args)
        elif task_name == REMATCH_EVENT:
            run_rematch(self.make_session, *args)


class World:
    """The API in-process with the real networks, and the worker's photo stage called directly."""

    def __init__(self, client: TestClient, faces_dir: Path) -> None:
        self.client, self.faces_dir = client, faces_dir
        self.app = client.app
        self.sender: InlineSender = self.app.state.sender
        self.settings = self.app.state.settings

    def event(self, **body) -> dict:
        return self.client.post("/api/v1/events", json={"name": "Test Marathon", **body}).json()

    def upload(self, event_id: str, photos: dict[str, list[str]]) -> dict[str, str]:
        files = [("files", (name, canvas(self.faces_dir, parts), "image/jpeg")) for name, parts in photos.items()]
        body = self.client.post(f"/api/v1/events/{event_id}/photos", files=files).json()
        assert not body["rejected"], body
        return {p["filename"]: p["id"] for p in body["photos"]}

    def process(self, photo_ids: list[str]) -> None:
        state = self.app.state
        backend = load_face_backend(self.settings)
        ctx = ProcessingContext(self.settings, state.make_session, state.store, backend, self.sender)
        outcomes = process_photos(ctx, photo_ids, task_id="test")
        assert set(outcomes.values()) == {"done"}, outcomes

    def enrol(self, event_id: str, person: str, index: int = 1, **fields) -> dict:
        data = {"name": person, "email": f"{person.replace('_', '.')}@example.com", "consent": "true", **fields}
        selfie = jpeg(identity_image(self.faces_dir, person, index))
        response = self.client.post(f"/api/v1/events/{event_id}/runners", data=data,
                                    files={"selfie": ("selfie.jpg", selfie, "image/jpeg")})
        assert response.status_code == 201, response.text
        return response.json()

    def matches(self, runner_id: str) -> list[dict]:
        response = self.client.get(f"/api/v1/runners/{runner_id}/matches")
        assert response.status_code == 200, response.text
        return response.json()["items"]

    def found(self, runners: dict[str, dict], photo_ids: dict[str, str]) -> dict[str, set[str]]:
        names = {v: k for k, v in photo_ids.items()}
        return {person: {names[m["photo_id"]] for m in self.matches(r["id"])} for person, r in runners.items()}


@pytest.fixture
def world(settings, faces_dir):
    app = create_app(settings)
    app.state.sender = InlineSender(app.state.make_session)
    with TestClient(app, headers={"Authorization": f"Bearer {new_api_key(settings)}"}) as client:
        yield World(client, faces_dir)


def test_runners_enrolled_after_the_photos_find_them_and_no_stranger(world):
    event = world.event()
    photo_ids = world.upload(event["id"], EVENT_PHOTOS)
    world.process(list(photo_ids.values()))
    runners = {person: world.enrol(event["id"], person) for person in ENROLLED}
    assert [name for name, _ in world.sender.sent].count(MATCH_RUNNER) == len(ENROLLED)
    assert world.found(runners, photo_ids) == EXPECTED
    # The stranger-only photo and the strangers next to runners are nobody's.
    stats = world.client.get(f"/api/v1/events/{event['id']}").json()["stats"]
    assert stats["matches"] == sum(len(v) for v in EXPECTED.values())
    for person, runner in runners.items():
        body = world.client.get(f"/api/v1/runners/{runner['id']}").json()
        assert body["matches"] == len(EXPECTED[person])
        sims = [m["similarity"] for m in world.matches(runner["id"])]
        assert sims == sorted(sims, reverse=True) and min(sims) >= event["match_threshold"]


def test_enrolling_before_or_after_the_photos_gives_the_same_matches(world):
    def run(enrol_first: bool) -> set[tuple[str, str, str, float]]:
        event = world.event()
        runners = {}
        if enrol_first:
            runners = {person: world.enrol(event["id"], person) for person in ENROLLED}
        photo_ids = world.upload(event["id"], EVENT_PHOTOS)
        world.process(list(photo_ids.values()))
        if not enrol_first:
            runners = {person: world.enrol(event["id"], person) for person in ENROLLED}
        assert world.found(runners, photo_ids) == EXPECTED
        names = {v: k for k, v in photo_ids.items()}
        return {(person, names[m["photo_id"]], round(m["similarity"], 4))
                for person, r in runners.items() for m in world.matches(r["id"])}

    assert run(enrol_first=True) == run(enrol_first=False)


def test_matching_runs_twice_harmlessly_and_counts_each_face_once(world):
    event = world.event()
    photo_ids = world.upload(event["id"], {"e.jpg": EVENT_PHOTOS["e.jpg"]})
    world.process(list(photo_ids.values()))
    runner = world.enrol(event["id"], "john_bolton")
    before = world.matches(runner["id"])
    world.sender.send(MATCH_RUNNER, runner["id"])  # a redelivered task
    with unit_of_work(world.app.state.make_session) as uow:  # and the photo matched again
        matching.rematch_photos(uow, matching.lock_event(uow, event["id"]), list(photo_ids.values()))
    assert world.matches(runner["id"]) == before and len(before) == 1


def test_threshold_change_recomputes_and_keeps_not_me(world):
    event = world.event()
    photo_ids = world.upload(event["id"], EVENT_PHOTOS)
    world.process(list(photo_ids.values()))
    runners = {person: world.enrol(event["id"], person) for person in ENROLLED}
    url = f"/api/v1/events/{event['id']}"

    strict = world.client.patch(url, json={"match_threshold": 0.95})
    # answered before the rematch, which runs as a background task (here right after the commit)
    assert strict.status_code == 202 and strict.json()["match_threshold"] == 0.95
    assert strict.json()["stats"]["rematch_done"] == 0 < strict.json()["stats"]["rematch_total"]
    stats = world.client.get(url).json()["stats"]
    assert stats["matches"] == 0 and stats["rematch_done"] == stats["rematch_total"] == len(photo_ids)
    assert world.client.patch(url, json={"name": "Same threshold"}).status_code == 200
    back = world.client.patch(url, json={"match_threshold": event["match_threshold"], "name": "Renamed"}).json()
    assert back["name"] == "Renamed" and world.found(runners, photo_ids) == EXPECTED

    # "Not me" (a MatchRejection) survives any recompute.
    from app.db import MatchRejection

    bill = runners["bill_mcbride"]["id"]
    with unit_of_work(world.app.state.make_session) as uow:
        uow.session.add(MatchRejection(runner_id=bill, photo_id=photo_ids["a.jpg"]))
    world.client.patch(url, json={"match_threshold": 0.3})
    world.client.patch(url, json={"match_threshold": event["match_threshold"]})
    assert world.found(runners, photo_ids)["bill_mcbride"] == {"c.jpg"}
    assert world.client.patch(url, json={"match_threshold": 1.5}).status_code == 422
    assert world.client.patch("/api/v1/events/nope", json={"name": "x"}).status_code == 404


def test_vectors_of_another_model_are_never_compared(world):
    event = world.event()
    runner = world.enrol(event["id"], "bill_mcbride")
    photo_ids = world.upload(event["id"], {"c.jpg": EVENT_PHOTOS["c.jpg"]})
    from app.db import Runner

    with unit_of_work(world.app.state.make_session) as uow:
        uow.session.get(Runner, runner["id"]).model_id = "some-older-model"
        matching.runners_changed(uow, event["id"])  # as every writer of runners does (worker caches)
    world.process(list(photo_ids.values()))
    assert world.matches(runner["id"]) == []
