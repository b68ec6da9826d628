"""The OpenAPI schema tells the truth: every error documented as problem+json, summaries and
examples everywhere, and schemathesis finds no answer that disagrees with the schema."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import jsonschema_rs
import pytest
from fastapi.testclient import TestClient

from app.db.session import unit_of_work
from app.main import create_app
from app.services import workers
from tests.conftest import REPO, RecordingSender, live_server, migrated_settings, new_api_key

METHODS = ("get", "post", "put", "patch", "delete")
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    # worker_heartbeat_s: one heartbeat written below stands for a live worker during the whole run
    app = create_app(migrated_settings(tmp_path_factory.mktemp("openapi") / "data", webhook_allow_private=True,
                                       worker_heartbeat_s=3600))
    app.state.sender = RecordingSender()
    return app


@pytest.fixture(scope="module")
def openapi(app) -> dict:
    with TestClient(app) as client:
        return client.get("/openapi.json").json()


def operations(openapi: dict):
    for path, item in openapi["paths"].items():
        for method in METHODS:
            if method in item:
                yield f"{method.upper()} {path}", item[method]


def resolve(openapi: dict, schema: dict) -> dict:
    while "$ref" in schema:
        schema = openapi["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def test_every_error_is_documented_as_problem_json_with_code(openapi):
    assert resolve(openapi, PROBLEM_REF)["required"] == ["type", "title", "status", "detail", "code"]
    for name, operation in operations(openapi):
        keyed = bool(operation.get("security"))
        errors = {int(s): r for s, r in operation["responses"].items() if int(s) >= 400}
        if keyed:
            assert {401, 403, 503} <= set(errors), name
        if any(p["in"] == "path" for p in operation.get("parameters", [])):
            assert 404 in errors, name
        if operation.get("parameters") or "requestBody" in operation:
            assert 422 in errors, name
        if "requestBody" in operation:
            assert 413 in errors, name
        for status, response in errors.items():
            assert list(response["content"]) == ["application/problem+json"], (name, status)
            content = response["content"]["application/problem+json"]
            assert content["schema"] == PROBLEM_REF, (name, status)
            assert content["examples"], (name, status)
            for example in content["examples"].values():
                assert example["value"]["status"] == status and example["value"]["code"], (name, status)


def test_every_operation_has_a_summary_and_examples(openapi):
    for name, operation in operations(openapi):
        assert operation.get("summary"), name
        for parameter in operation.get("parameters", []):
            if parameter["in"] == "path":
                assert parameter.get("description") and parameter.get("example"), (name, parameter["name"])
        for status, response in operation["responses"].items():
            if int(status) < 400 and "content" in response:
                schema = resolve(openapi, response["content"]["application/json"]["schema"])
                assert schema.get("examples"), (name, status)
        body = operation.get("requestBody", {}).get("content", {}).get("application/json")
        if body:
            assert resolve(openapi, body["schema"]).get("examples"), name


def test_examples_are_valid_against_their_schemas(openapi):
    """An example that drifts from its model (a field added, renamed) fails here."""
    checked = 0
    for name, schema in openapi["components"]["schemas"].items():
        validator = jsonschema_rs.validator_for({"$ref": f"#/components/schemas/{name}",
                                                 "components": openapi["components"]})
        for example in schema.get("examples", []):
            errors = [e.message for e in validator.iter_errors(example)]
            assert not errors, (name, errors)
            checked += 1
    for name, operation in operations(openapi):
        for status, response in operation["responses"].items():
            for media in response.get("content", {}).values():
                for example in media.get("examples", {}).values():
                    assert jsonschema_rs.validator_for({**media["schema"], "components": openapi["components"]}) \
                        .is_valid(example["value"]), (name, status)
                    checked += 1
    assert checked > 20


def test_405_says_which_methods_are_allowed(app):
    with TestClient(app) as client:
        response = client.request("TRACE", "/healthz")
        runner = client.request("PUT", "/api/v1/runners/r1")
    assert response.status_code == 405 and response.headers["Allow"] == "GET"
    assert runner.status_code == 405 and runner.headers["Allow"] == "GET, DELETE"  # two routes, one path
    assert response.headers["content-type"].startswith("application/problem+json")


# --- schemathesis ------------------------------------------------------------------------------

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"


def test_schemathesis_finds_no_disagreement_with_the_schema(app, faces_dir, tmp_path):
    """schemathesis (pinned in the test extra) runs its examples, coverage, fuzzing and stateful
    phases with bounded examples against a live server, as an organiser. Every check must pass:
    answers and status codes as documented, schema-valid input accepted, invalid input refused,
    and never a 5xx. tests/app/schemathesis_hooks.py puts real images where photos go."""
    key = new_api_key(app.state.settings)
    with live_server(app) as base:
        with unit_of_work(app.state.make_session) as uow:  # /readyz: a worker is alive
            workers.beat(uow, "schemathesis-worker", hostname="tests", pid=os.getpid())
        event = httpx.post(f"{base}/api/v1/events", json={"name": "Schemathesis 10k"},
                           headers={"Authorization": f"Bearer {key}"}).json()
        env = {**os.environ, "PYTHONPATH": str(REPO), "SCHEMATHESIS_HOOKS": "tests.app.schemathesis_hooks",
               "FINISHLINE_TEST_SELFIE": str(faces_dir / "identities" / "bill_mcbride" / "1.jpg"),
               "FINISHLINE_TEST_EVENT_ID": event["id"]}
        run = subprocess.run(
            [str(SCHEMATHESIS), "run", f"{base}/openapi.json", "-H", f"Authorization: Bearer {key}",
             "--max-examples", "10", "--seed", "20261201", "--checks", "all", "--request-timeout", "60",
             "--no-color", "--report-dir", str(tmp_path)],
            cwd=tmp_path, env=env, capture_output=True, text=True, errors="replace", timeout=600)
    report = "\n".join(line[:300] for line in (run.stdout + run.stderr).splitlines())  # curl lines carry bytes
    (tmp_path / "schemathesis.txt").write_text(report)
    assert run.returncode == 0, report[-15000:]
