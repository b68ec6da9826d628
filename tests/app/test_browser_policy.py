"""Issue 12.9: every page tells browsers not to sniff, frame or leak it, and refuses form posts
that another site made a visitor's browser send."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.browser_policy import CONTENT_SECURITY_POLICY
from app.db import Event
from app.db.session import make_engine, make_sessionmaker, unit_of_work
from app.services import tokens
from tests.conftest import organisation_for_tests, api_client, migrated_settings

TEMPLATES = Path(__file__).resolve().parents[2] / "app" / "pages" / "templates"
# The exact policy the helpers agreed on (COORDINATION.md: "Web pages: one policy for everyone").
AGREED_CSP = ("default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
              "frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'")


@pytest.fixture
def site(tmp_path):
    settings = migrated_settings(tmp_path / "data", public_base_url="https://photos.example.org")
    engine = make_engine(settings.resolved_database_url)
    with unit_of_work(make_sessionmaker(engine)) as uow:
        uow.session.add(Event(organisation_id=organisation_for_tests(uow).id, id="ev1", name="Policy run",
                              slug="policy-run", match_threshold=0.5))
    engine.dispose()
    with api_client(settings, with_key=False) as client:
        yield client, settings


def _pages(settings) -> list[str]:
    token = tokens.make_token(settings.signing_key, "unsubscribe", "nobody")
    return ["/e/policy-run", "/e/no-such-event", "/g/forged", "/d/forged", f"/u/{token}", "/healthz",
            "/api/v1/events/x", "/static/finishline.css"]


def test_every_page_sends_the_security_headers(site):
    client, settings = site
    assert CONTENT_SECURITY_POLICY == AGREED_CSP
    for path in _pages(settings):
        response = client.get(path)
        assert response.headers.get("x-content-type-options") == "nosniff", path
        assert response.headers.get("content-security-policy") == AGREED_CSP, path
        assert response.headers.get("referrer-policy") == "no-referrer", path
        assert response.headers.get("x-frame-options") == "DENY", path


def test_templates_hold_no_inline_script_or_style():
    """The CSP forbids inline script and style; a template that used them would break silently."""
    for template in TEMPLATES.rglob("*.html"):
        if "email" in template.parts:
            continue  # e-mail bodies are read in mail clients, not served under our CSP
        text = template.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), template
        assert "<style" not in text and "style=" not in text, template


@pytest.mark.parametrize("headers", [
    {"Origin": "http://evil.example"},
    {"Origin": "null", "Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site", "Origin": "https://shop.example.org"},
    {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},
])
def test_cross_site_form_posts_are_refused_with_403(site, headers):
    client, settings = site
    token = tokens.make_token(settings.signing_key, "unsubscribe", "nobody")
    for path in ("/e/policy-run", "/d/forged", f"/u/{token}", "/g/forged/photos/p/not-me"):
        response = client.post(path, data={"name": "Eve", "email": "eve@example.org", "consent": "true"},
                               files={"selfie": ("me.jpg", b"x", "image/jpeg")}, headers=headers)
        assert response.status_code == 403, (path, headers, response.status_code)
        assert "text/html" in response.headers["content-type"]
        assert response.headers["content-security-policy"] == AGREED_CSP


@pytest.mark.parametrize("headers", [
    {},  # no browser metadata: a mail provider's one-click unsubscribe, curl, an old browser
    {"Origin": "https://photos.example.org", "Sec-Fetch-Site": "same-origin"},
    {"Sec-Fetch-Site": "none"},  # typed into the address bar / a bookmark
    # what Chromium sends for our own form under our Referrer-Policy: no-referrer
    {"Origin": "null", "Sec-Fetch-Site": "same-origin"},
    {"Origin": "http://testserver"},  # the Host the request came to (a proxy that keeps Host)
])
def test_same_origin_and_non_browser_posts_pass(site, headers):
    client, _ = site
    response = client.post("/e/policy-run", data={"name": "Ann", "email": "ann@example.org"},
                           files={"selfie": ("me.jpg", b"x", "image/jpeg")}, headers=headers)
    assert response.status_code == 422, response.text[:300]  # reached the form: consent missing


def test_api_posts_with_a_bearer_key_are_not_subject_to_the_browser_check(site):
    client, _ = site
    response = client.post("/api/v1/events", json={"name": "x"}, headers={"Origin": "http://evil.example"})
    assert response.status_code == 401  # the key check answers, not the browser policy
