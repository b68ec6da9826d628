"""Tenancy: every route of the OpenAPI schema, walked from a table, for each kind of caller.

For every route: no key -> 401; another organisation's ids -> 404 (exactly like unknown ids);
a partner key -> 403 `forbidden`, or allowed where API.md ("Organisations and keys") says so.
A route added without a row in ROUTES fails `test_every_route_has_a_row`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.db import Face, Photo, Runner
from app.db.session import unit_of_work
from app.main import create_app
from app.services import tokens
from tests.app.test_matching import identity_image, jpeg
from tests.conftest import RecordingSender, migrated_settings, new_api_key

PUBLIC, ORGANISER, PARTNER = "public", "organiser", "partner"  # who may call it (partner: its own)


@dataclass(frozen=True)
class Row:
    allows: str
    json: dict | None = None
    form: str | None = None  # "photos", "selfie" or "start-list": a valid multipart body (checks stop earlier)


ROUTES: dict[tuple[str, str], Row] = {
    ("GET", "/healthz"): Row(PUBLIC),
    ("GET", "/readyz"): Row(PUBLIC),
    ("POST", "/api/v1/events"): Row(ORGANISER, json={"name": "Another run"}),
    ("GET", "/api/v1/events"): Row(ORGANISER),
    ("GET", "/api/v1/events/{event_id}"): Row(PARTNER),
    ("PATCH", "/api/v1/events/{event_id}"): Row(ORGANISER, json={"name": "Renamed"}),
    ("DELETE", "/api/v1/events/{event_id}"): Row(ORGANISER),
    ("POST", "/api/v1/events/{event_id}/photos"): Row(ORGANISER, form="photos"),
    ("GET", "/api/v1/events/{event_id}/photos"): Row(ORGANISER),
    ("GET", "/api/v1/photos/{photo_id}"): Row(ORGANISER),
    ("DELETE", "/api/v1/photos/{photo_id}"): Row(ORGANISER),
    ("POST", "/api/v1/photos/{photo_id}/retry"): Row(ORGANISER),
    ("POST", "/api/v1/events/{event_id}/runners"): Row(PARTNER, form="selfie"),
    ("POST", "/api/v1/events/{event_id}/start-list"): Row(ORGANISER, form="start-list"),
    ("GET", "/api/v1/events/{event_id}/runners"): Row(ORGANISER),
    ("GET", "/api/v1/runners/{runner_id}"): Row(PARTNER),
    ("GET", "/api/v1/runners/{runner_id}/matches"): Row(PARTNER),
    ("DELETE", "/api/v1/runners/{runner_id}"): Row(PARTNER),
    ("POST", "/api/v1/events/{event_id}/notify"): Row(ORGANISER),
    ("POST", "/api/v1/runners/{runner_id}/notify"): Row(PARTNER),
    ("POST", "/api/v1/keys"): Row(ORGANISER, json={"name": "ci", "scope": "organiser"}),
    ("GET", "/api/v1/keys"): Row(ORGANISER),
    ("DELETE", "/api/v1/keys/{key_id}"): Row(ORGANISER),
    ("POST", "/api/v1/webhooks"): Row(ORGANISER, json={"url": "http://127.0.0.1:9/hook", "events": ["runner.matched"]}),
    ("GET", "/api/v1/webhooks"): Row(ORGANISER),
    ("DELETE", "/api/v1/webhooks/{webhook_id}"): Row(ORGANISER),
}


@dataclass
class Organisation:
    key: str  # organiser key
    ids: dict[str, str] = field(default_factory=dict)  # path parameter -> an id of this organisation


@dataclass
class Tenants:
    settings: object
    client: TestClient  # no key: each call says which
    a: Organisation
    b: Organisation
    partner: str  # a partner key of A for A's first event; ids["runner_id"] of A is one it enrolled
    partner_key_id: str

    def fresh_runner(self, org: Organisation, *, enrolled_by: str | None) -> str:
        """A runner row (no CNN needed) in the organisation's event."""
        with unit_of_work(self.client.app.state.make_session) as uow:
            runner = Runner(event_id=org.ids["event_id"], name="Ada", email="ada@example.org",
                            enrolled_by_key_id=enrolled_by)
            uow.session.add(runner)
        return runner.id


def _populate(client: TestClient, key: str, name: str) -> Organisation:
    org = Organisation(key)
    auth = {"Authorization": f"Bearer {key}"}
    event = client.post("/api/v1/events", json={"name": name}, headers=auth).json()
    org.ids["event_id"] = event["id"]
    org.ids["slug"] = event["slug"]
    with unit_of_work(client.app.state.make_session) as uow:
        photo = Photo(event_id=event["id"], filename="p.jpg", sha256="0" * 64, size_bytes=1,
                      content_type="image/jpeg", storage_key=f"events/{event['id']}/originals/p.jpg", status="done")
        uow.session.add(photo)
        uow.session.flush()
        uow.session.add(Face(photo_id=photo.id, event_id=event["id"], x1=0, y1=0, x2=9, y2=9, score=0.9, size_px=9,
                             landmarks=[], embedding=b"\0" * 8, model_id="test"))
    org.ids["photo_id"] = photo.id
    org.ids["key_id"] = client.post("/api/v1/keys", json={"name": "spare"}, headers=auth).json()["id"]
    org.ids["webhook_id"] = client.post("/api/v1/webhooks", headers=auth, json={
        "url": "http://127.0.0.1:9/hook", "events": ["event.processed"]}).json()["id"]
    return org


@pytest.fixture(scope="module")
def tenants(tmp_path_factory) -> Tenants:
    settings = migrated_settings(tmp_path_factory.mktemp("tenancy") / "data", webhook_allow_private=True)
    app = create_app(settings)
    app.state.sender = RecordingSender()
    with TestClient(app) as client:
        a = _populate(client, new_api_key(settings), "A's run")
        b = _populate(client, new_api_key(settings, org="other"), "B's run")
        partner = new_api_key(settings, scope="partner", event_ids=[a.ids["event_id"]])
        partner_key_id = partner.split("_")[1]
        world = Tenants(settings, client, a, b, partner, partner_key_id)
        a.ids["runner_id"] = world.fresh_runner(a, enrolled_by=partner_key_id)
        b.ids["runner_id"] = world.fresh_runner(b, enrolled_by=None)
        yield world


def operations(app) -> set[tuple[str, str]]:
    schema = app.openapi()
    return {(method.upper(), path) for path, item in schema["paths"].items()
            for method in item if method in {"get", "post", "put", "patch", "delete"}}


def test_every_route_has_a_row(tenants):
    """A new route needs its row here: who may call it, and for a partner, whether it may."""
    assert operations(tenants.client.app) == set(ROUTES)


def call(world: Tenants, method: str, path: str, row: Row, ids: dict[str, str], key: str | None):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    kwargs: dict = {"headers": headers}
    if row.json is not None:
        kwargs["json"] = row.json
    if row.form == "photos":
        kwargs["files"] = {"files": ("x.jpg", b"not really", "image/jpeg")}
    elif row.form == "start-list":
        kwargs["files"] = {"file": ("start.csv", b"bib,name\n", "text/csv")}
    elif row.form == "selfie":
        kwargs["data"] = {"name": "Ada", "email": "ada@example.org", "consent": "true"}
        kwargs["files"] = {"selfie": ("x.jpg", b"not really", "image/jpeg")}
    return world.client.request(method, path.format(**ids), **kwargs)


@pytest.mark.parametrize("method,path", sorted(ROUTES))
def test_route_answers_each_caller_as_api_md_says(tenants, method, path):
    row = ROUTES[(method, path)]
    a, b = tenants.a, tenants.b
    if row.allows == PUBLIC:
        assert call(tenants, method, path, row, a.ids, None).status_code not in (401, 403, 404)
        return

    missing = call(tenants, method, path, row, a.ids, None)
    assert missing.status_code == 401 and missing.json()["code"] == "unauthorized", missing.text

    if "{" in path:  # another organisation's ids read exactly as unknown ones
        theirs = call(tenants, method, path, row, a.ids, b.key)
        unknown = call(tenants, method, path, row, {k: "0" * 26 for k in a.ids}, b.key)
        assert theirs.status_code == unknown.status_code == 404, theirs.text
        assert theirs.json()["code"] == unknown.json()["code"]

    partner = call(tenants, method, path, row, _partner_ids(tenants, method, path), tenants.partner)
    if row.allows == ORGANISER:
        assert partner.status_code == 403 and partner.json()["code"] == "forbidden", partner.text
    else:
        assert partner.status_code not in (401, 403, 404), partner.text
        if "{" in path:  # its own organisation only, too
            elsewhere = call(tenants, method, path, row, b.ids, tenants.partner)
            assert elsewhere.status_code == 404, elsewhere.text


def _partner_ids(world: Tenants, method: str, path: str) -> dict[str, str]:
    ids = dict(world.a.ids)
    if method == "DELETE" and "{runner_id}" in path:  # keep the shared runner for the other rows
        ids["runner_id"] = world.fresh_runner(world.a, enrolled_by=world.partner_key_id)
    return ids


def test_lists_show_only_the_callers_organisation(tenants):
    a, b = tenants.a, tenants.b
    for org, other in ((a, b), (b, a)):
        auth = {"Authorization": f"Bearer {org.key}"}
        events = tenants.client.get("/api/v1/events", headers=auth).json()["items"]
        assert org.ids["event_id"] in {e["id"] for e in events}
        assert other.ids["event_id"] not in {e["id"] for e in events}
        keys = {k["id"] for k in tenants.client.get("/api/v1/keys", headers=auth).json()["items"]}
        assert org.ids["key_id"] in keys and other.ids["key_id"] not in keys


def test_a_partner_uses_only_its_events_and_its_own_runners(tenants):
    a, client = tenants.a, tenants.client
    auth = {"Authorization": f"Bearer {tenants.partner}"}
    organisers = {"Authorization": f"Bearer {a.key}"}
    second = client.post("/api/v1/events", json={"name": "A's second run"}, headers=organisers).json()["id"]
    assert client.get(f"/api/v1/events/{second}", headers=auth).json()["code"] == "forbidden"
    assert client.post(f"/api/v1/events/{second}/runners", headers=auth,
                       data={"name": "x", "email": "x@example.org", "consent": "true"},
                       files={"selfie": ("x.jpg", b"x", "image/jpeg")}).status_code == 403
    # a runner of its own event, but enrolled on the selfie page (or by another key): not its own
    page_runner = tenants.fresh_runner(a, enrolled_by=None)
    for method, path in (("GET", "/api/v1/runners/{id}"), ("GET", "/api/v1/runners/{id}/matches"),
                         ("DELETE", "/api/v1/runners/{id}"), ("POST", "/api/v1/runners/{id}/notify")):
        response = client.request(method, path.format(id=page_runner), headers=auth)
        assert response.status_code == 403 and response.json()["code"] == "forbidden", (method, path)
    # a partner key without events may use every event of its organisation
    everywhere = {"Authorization": f"Bearer {new_api_key(tenants.settings, scope='partner')}"}
    assert client.get(f"/api/v1/events/{second}", headers=everywhere).status_code == 200


def test_revoked_keys_answer_401(tenants):
    organisers = {"Authorization": f"Bearer {tenants.a.key}"}
    created = tenants.client.post("/api/v1/keys", json={"name": "temp", "scope": "partner",
                                                        "event_ids": [tenants.a.ids["event_id"]]},
                                  headers=organisers)
    assert created.status_code == 201, created.text
    body = created.json()
    assert set(body) >= {"id", "name", "scope", "event_ids", "key", "created_at"}
    assert body["scope"] == "partner" and body["event_ids"] == [tenants.a.ids["event_id"]]
    temp = {"Authorization": f"Bearer {body['key']}"}
    assert tenants.client.get(f"/api/v1/events/{tenants.a.ids['event_id']}", headers=temp).status_code == 200
    listed = tenants.client.get("/api/v1/keys", headers=organisers).json()["items"]
    assert all("key" not in k and "secret_hash" not in k for k in listed)
    assert tenants.client.delete(f"/api/v1/keys/{body['id']}", headers=organisers).status_code == 204
    assert tenants.client.get(f"/api/v1/events/{tenants.a.ids['event_id']}", headers=temp).status_code == 401
    # a partner key may only name events of its organisation
    bad = tenants.client.post("/api/v1/keys", json={"name": "x", "scope": "partner",
                                                    "event_ids": [tenants.b.ids["event_id"]]}, headers=organisers)
    assert bad.status_code == 422 and bad.json()["code"] == "unknown_event"


def test_pages_work_for_any_organisation_without_a_key(tenants):
    b = tenants.b
    page = tenants.client.get(f"/e/{b.ids['slug']}")
    assert page.status_code == 200 and "B&#39;s run" in page.text
    token = tokens.make_token(tenants.settings.signing_key, "gallery", b.ids["runner_id"])
    assert tenants.client.get(f"/g/{token}").status_code == 200  # the token alone opens it
    assert tenants.client.get(f"/g/{token[:-3]}xyz").status_code == 404
    # an API key opens no gallery by itself: the runner's id is not a link
    assert tenants.client.get(f"/g/{b.ids['runner_id']}",
                              headers={"Authorization": f"Bearer {b.key}"}).status_code == 404


def test_a_partner_enrols_a_real_selfie_and_reads_back_only_its_own(tenants, faces_dir: Path):
    a, client = tenants.a, tenants.client
    selfie = jpeg(identity_image(faces_dir, "john_bolton", 1))
    enrolled = client.post(f"/api/v1/events/{a.ids['event_id']}/runners",
                           headers={"Authorization": f"Bearer {tenants.partner}"},
                           data={"name": "John", "email": "john@example.org", "consent": "true"},
                           files={"selfie": ("me.jpg", selfie, "image/jpeg")})
    assert enrolled.status_code == 201, enrolled.text
    runner_id = enrolled.json()["id"]
    assert client.get(f"/api/v1/runners/{runner_id}",
                      headers={"Authorization": f"Bearer {tenants.partner}"}).status_code == 200
    another_partner = new_api_key(tenants.settings, scope="partner", event_ids=[a.ids["event_id"]])
    assert client.get(f"/api/v1/runners/{runner_id}",
                      headers={"Authorization": f"Bearer {another_partner}"}).status_code == 403
    assert client.get(f"/api/v1/runners/{runner_id}",
                      headers={"Authorization": f"Bearer {a.key}"}).status_code == 200  # the organiser sees all
