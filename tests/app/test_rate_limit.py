"""Issue 12.10: the public form's limit is per runner address (behind trusted proxies only) and
event, shared by every API instance through Redis, and answered 429 with Retry-After."""

from __future__ import annotations

import pytest

from app.db import Event
from app.db.session import make_engine, make_sessionmaker, unit_of_work
from app.ratelimit import RedisWindowLimiter, client_key
from tests.conftest import api_client, migrated_settings, organisation_for_tests

pytestmark = pytest.mark.redis


def _settings(tmp_path, **overrides):
    settings = migrated_settings(tmp_path / "data", public_rate_limit=2, public_rate_window_s=600, **overrides)
    engine = make_engine(settings.resolved_database_url)
    with unit_of_work(make_sessionmaker(engine)) as uow:
        org = organisation_for_tests(uow).id
        for slug in ("race-a", "race-b"):
            uow.session.add(Event(organisation_id=org, name=slug, slug=slug, match_threshold=0.5))
    engine.dispose()
    return settings


def _post(client, slug="race-a", **headers):
    return client.post(f"/e/{slug}", data={"name": "Ann", "email": "ann@example.org", "consent": "true"},
                       files={"selfie": ("me.jpg", b"not a photo", "image/jpeg")}, headers=headers)


@pytest.fixture
def redis(redis_url):
    import redis as redis_lib

    client = redis_lib.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.flushdb()


def test_two_api_instances_share_one_limit_in_redis(tmp_path, redis, redis_url):
    settings = _settings(tmp_path, redis_url=redis_url)
    with api_client(settings, with_key=False) as one, api_client(settings, with_key=False) as two:
        assert _post(one).status_code == 422  # counted: it reached the form
        assert _post(two).status_code == 422
        refused = _post(one)
        assert refused.status_code == 429 and "try again" in refused.text
        assert 1 <= int(refused.headers["retry-after"]) <= 600
        assert _post(two).status_code == 429  # the other instance knows, through Redis
        assert _post(one, slug="race-b").status_code == 422  # another event has its own allowance
    assert any(key.startswith(b"finishline:rate:") for key in redis.keys("*"))


def test_forwarded_for_counts_only_behind_a_trusted_proxy(tmp_path, redis, redis_url):
    # The test client connects from "testclient"; trusting it makes it the proxy in front.
    behind = _settings(tmp_path / "a", redis_url=redis_url, trusted_proxies="testclient")
    with api_client(behind, with_key=False) as client:
        for _ in range(2):
            assert _post(client, **{"X-Forwarded-For": "203.0.113.5"}).status_code == 422
        assert _post(client, **{"X-Forwarded-For": "203.0.113.5"}).status_code == 429
        # a runner at another address, through the same proxy, is not blocked by the first
        assert _post(client, **{"X-Forwarded-For": "198.51.100.7, 203.0.113.9"}).status_code == 422
    redis.flushdb()
    exposed = _settings(tmp_path / "b", redis_url=redis_url)  # no proxy trusted: the header is ignored
    with api_client(exposed, with_key=False) as client:
        for n in range(2):
            assert _post(client, **{"X-Forwarded-For": f"192.0.2.{n}"}).status_code == 422
        assert _post(client, **{"X-Forwarded-For": "192.0.2.99"}).status_code == 429  # no way around it


def test_without_redis_the_limit_is_in_process(tmp_path):
    settings = _settings(tmp_path)
    with api_client(settings, with_key=False) as client:
        assert [_post(client).status_code for _ in range(3)] == [422, 422, 429]


def test_redis_window_slides_and_ipv6_counts_per_64_prefix(redis):
    now = [1000.0]
    limiter = RedisWindowLimiter(redis, limit=2, window_s=60, clock=lambda: now[0])
    assert limiter.hit("k") == 0 and limiter.hit("k") == 0
    assert limiter.hit("k") == pytest.approx(60, abs=0.01)
    now[0] += 60.5
    assert limiter.hit("k") == 0
    assert client_key("2001:db8:1:2:aaaa::1", "race") == client_key("2001:db8:1:2:bbbb::2", "race")
    assert client_key("2001:db8:1:3::1", "race") != client_key("2001:db8:1:2::1", "race")
    assert client_key("203.0.113.5", "race") != client_key("203.0.113.5", "other")
