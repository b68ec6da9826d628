"""What the OpenAPI schema says beyond the routes' own signatures, in one place.

Errors: the answers routes document, built from one catalogue.

A route lists the stable `code`s it can answer with: `responses=api_errors("event_not_found")`.
`api_errors` adds what every keyed route can answer (401 without a valid key, 403 outside a
partner key's scope, 503 while the database is down); `problems` is the same without them. Codes are grouped by HTTP status into
one `application/problem+json` response each, with one named example per code, so `/docs` shows
a partner every reason a call can fail. An unknown code is a KeyError at import time.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI

from app.errors import PROBLEM_JSON, AppError, problem_body
from app.schemas.problem import Problem

# code -> (HTTP status, an example `detail`)
CATALOGUE: dict[str, tuple[int, str]] = {
    "malformed_body": (400, "There was an error parsing the body"),
    "unauthorized": (401, "A valid API key is required: Authorization: Bearer <key>."),
    "forbidden": (403, "This key may not do that."),
    "event_not_found": (404, "No event with id '0190c7a35b2e4f00a1b2c3'."),
    "photo_not_found": (404, "No photo with id '0190c7a35b2e4f00a1b2c3'."),
    "runner_not_found": (404, "No runner with id '0190c7a35b2e4f00a1b2c3'."),
    "key_not_found": (404, "No key with id '0190c7a35b2e4f00a1b2c3'."),
    "webhook_not_found": (404, "No webhook with id '0190c7a35b2e4f00a1b2c3'."),
    "conflict": (409, "That conflicts with the current state."),
    "retention_ended": (409, "This event's photos are no longer searched by face: its retention period has ended."),
    "photo_not_failed": (409, "Only a failed photo can be retried; this one is done."),
    "payload_too_large": (413, "The request body is larger than 61865984 bytes."),
    "image_too_large": (413, "That photo is too large. Please upload a smaller picture."),
    "too_many_files": (413, "Too many files. Maximum number of files is 5000. (at most 5000 per request)"),
    "validation_error": (422, "name: String should have at least 1 character"),
    "invalid_cursor": (422, "This cursor is not one we gave out; start again without it."),
    "invalid_scope": (422, "Only partner keys are limited to events."),
    "unknown_event": (422, "event_ids must be events of this organisation."),
    "no_files": (422, "Send one or more files in the multipart field `files`."),
    "malformed_upload": (422, "The body ends before its closing boundary: it was cut off."),
    "consent_required": (422, "Please tick the box to agree that we use your selfie to find you in the photos."),
    "not_an_image": (422, "That file is not a photo we can read. Please upload a JPEG or PNG picture of your face."),
    "no_face": (422, "We could not find a face in that photo. Please upload a clear photo of your face."),
    "multiple_faces": (422, "There is more than one face in that photo. Please upload a photo of just you, "
                            "or choose which face is yours."),
    "invalid_face": (422, "That face choice does not match this photo. Please choose one of the faces shown."),
    "face_too_small": (422, "Your face is too small in that photo. Please upload a closer photo of your face."),
    "invalid_url": (422, "url: the host 'hooks.example.invalid' does not resolve"),
    "unsafe_url": (422, "url: the host resolves to a private or loopback address (10.0.0.7)"),
    "malformed_csv": (422, "The file is not valid CSV at line 3: unexpected end of data."),
    "missing_bib_column": (422, "The header row (name, email) has no `bib` column."),
    "file_too_large": (413, "A start list may be at most 10 MiB."),
    "too_many_rows": (413, "A start list may have at most 100000 rows."),
    "rate_limited": (429, "Too many requests; try again in 12 s."),
    "database_unavailable": (503, "The database is unavailable; try again shortly."),
    "broker_unavailable": (503, "The task queue is unavailable; try again shortly."),
    "overloaded": (503, "The server is busy; try again shortly."),
    "not_ready": (503, "Not ready: broker unavailable."),
}

# Fields beside the standard ones in some answers.
EXTRA = {"multiple_faces": {"faces": [{"index": 0, "box": [40.0, 52.0, 190.0, 230.0]},
                                      {"index": 1, "box": [260.0, 60.0, 400.0, 236.0]}]}}

# What every route behind an API key can answer, whatever it does.
KEYED = ("unauthorized", "forbidden", "database_unavailable", "overloaded")

_HEADERS = {
    401: {"WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}},
    429: {"Retry-After": {"description": "Seconds to wait before trying again", "schema": {"type": "integer"}}},
    503: {"Retry-After": {"description": "Seconds to wait before trying again", "schema": {"type": "integer"}}},
}


def _title(status: int) -> str:
    titles = {cls.status: cls.title for cls in _error_classes(AppError)}
    return titles.get(status) or HTTPStatus(status).phrase


def _error_classes(cls: type[AppError]) -> list[type[AppError]]:
    return [cls] + [sub for child in cls.__subclasses__() for sub in _error_classes(child)]


def problems(*codes: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error codes, one problem+json response per status."""
    by_status: dict[int, list[str]] = {}
    for code in dict.fromkeys(codes):  # keeps order, drops repeats
        by_status.setdefault(CATALOGUE[code][0], []).append(code)
    responses: dict[int | str, dict[str, Any]] = {}
    for status, status_codes in sorted(by_status.items()):
        title = _title(status)
        examples = {code: {"summary": code, "value": problem_body(status, title, CATALOGUE[code][1], code, EXTRA.get(code))}
                    for code in status_codes}
        response: dict[str, Any] = {
            "description": f"{title}: `code` is one of " + ", ".join(f"`{c}`" for c in status_codes),
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}, "examples": examples}},
        }
        if status in _HEADERS:
            response["headers"] = _HEADERS[status]
        responses[status] = response
    return responses


def api_errors(*codes: str) -> dict[int | str, dict[str, Any]]:
    """`problems` for a route behind an API key: 401, 403 and 503 come with it."""
    return problems(*KEYED, *codes)


# --- path parameters: described once for every route that takes them ---------------------------

EXAMPLE_ID = "0190c7a35b2e4f00a1b2c3d4e5"
PATH_PARAMETERS = {
    "event_id": "An event's id, from `POST /api/v1/events` or `GET /api/v1/events`",
    "photo_id": "A photo's id, from the upload's answer or `GET /api/v1/events/{event_id}/photos`",
    "runner_id": "A runner's id, from the enrolment's answer",
    "key_id": "An API key's id, from `POST /api/v1/keys` or `GET /api/v1/keys`",
    "webhook_id": "A webhook's id, from `POST /api/v1/webhooks` or `GET /api/v1/webhooks`",
}


def _finish(schema: dict[str, Any]) -> dict[str, Any]:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Problem"] = Problem.model_json_schema()
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            # FastAPI adds a JSON 422 to every route with parameters; ours are problem+json.
            if "HTTPValidationError" in json.dumps(operation.get("responses", {}).get("422", {})):
                operation["responses"]["422"] = problems("validation_error")[422]
            for parameter in operation.get("parameters", []):
                if parameter.get("in") == "path" and parameter["name"] in PATH_PARAMETERS:
                    parameter.setdefault("description", PATH_PARAMETERS[parameter["name"]])
                    parameter.setdefault("example", EXAMPLE_ID)
    for item in schema.get("webhooks", {}).values():
        for operation in item.values():
            # what a receiver answers: its status alone (FastAPI would add our 422 and a JSON body)
            operation["responses"] = {status: {"description": r["description"]}
                                      for status, r in operation["responses"].items() if status != "422"}
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    return schema


def install_openapi(app: FastAPI) -> None:
    """Serve the generated schema with the Problem component and the path parameters' docs."""
    generate = app.openapi  # FastAPI's, which caches until the routes change
    app.openapi = lambda: _finish(generate())  # type: ignore[method-assign]
