"""schemathesis hooks for tests/app/test_openapi.py (loaded through SCHEMATHESIS_HOOKS).

Schema-valid input that a schema cannot describe: a real photo where an image goes (random bytes
are rightly refused as `not_an_image`), a CSV with a `bib` column where a start list goes, e-mail domains that can receive mail, and the id of a
real event half of the time, so the checks also reach past the 404.
"""

from __future__ import annotations

import os
import re
from functools import cache
from pathlib import Path

import schemathesis


@cache
def photo() -> bytes:
    return Path(os.environ["FINISHLINE_TEST_SELFIE"]).read_bytes()


# The schema says `format: email` and, in words, that special-use domains are refused (the
# e-mails could never arrive); a regex saying so would need lookarounds that generators lack.
SPECIAL_USE = re.compile(r"\.(arpa|invalid|local|localhost|onion|test)$", re.IGNORECASE)


def with_real_images(case):
    negative = case.meta is not None and case.meta.generation.mode.is_negative
    if not negative and isinstance(case.body, dict):
        if "selfie" in case.body:
            case.body["selfie"] = photo()
        if "files" in case.body:
            case.body["files"] = [photo()]
        if "file" in case.body:  # a start list: any bytes are not a CSV with a `bib` column
            case.body["file"] = b"bib,name,email\n1042,Ada Runner,ada@example.org\n"
        case.body.pop("face", None)  # an index into the faces of an earlier `multiple_faces` answer
        if case.body.get("event_ids"):  # ids of events that exist (others are rightly 422 unknown_event)
            case.body["event_ids"] = [os.environ["FINISHLINE_TEST_EVENT_ID"]]
        if isinstance(case.body.get("url"), str):  # a webhook: a host that resolves (no DNS here)
            case.body["url"] = "http://127.0.0.1:9/hooks"
        if isinstance(case.body.get("email"), str):
            case.body["email"] = SPECIAL_USE.sub(".org", case.body["email"])
    return case


@schemathesis.hook
def map_case(context, case):
    negative = case.meta is not None and case.meta.generation.mode.is_negative
    if not negative and isinstance(case.query, dict):
        case.query.pop("cursor", None)  # cursors are opaque: only one a page gave out is valid
    if "event_id" in (case.path_parameters or {}) and hash(repr(case.path_parameters)) % 2 == 0:
        case.path_parameters["event_id"] = os.environ["FINISHLINE_TEST_EVENT_ID"]
    return with_real_images(case)


@schemathesis.hook
def before_add_examples(context, examples):
    """The schema's own examples (phase `examples`) need real images too."""
    for case in examples:
        with_real_images(case)
