"""The rate limit of public (keyless) form posts, such as the selfie form.

Who: the runner's address, per event. Behind a reverse proxy the address comes from
X-Forwarded-For, but only when the connection comes from a configured trusted proxy
(FINISHLINE_TRUSTED_PROXIES; uvicorn's ProxyHeadersMiddleware in app/main.py rewrites the client
before anything else runs), so nobody can pick a fresh address per request. IPv6 clients count
per /64, the block one household or phone usually holds.

Where: in Redis when REDIS_URL is set, so every API instance enforces one limit; in this process
otherwise (the embedded setup has one API process).

How: a sliding-window log (the times of recent hits) per key; one more is refused when `limit`
of them fall inside the last `window_s` seconds, with the wait until one leaves the window.
The route checks it before it reads the request body, so a refused post costs no upload.
Redis being down lets posts through (logged): the limit protects, it must not take the form down.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Protocol

from fastapi import Request

from app.errors import TooManyRequests

log = logging.getLogger(__name__)
_create_lock = threading.Lock()


class Limiter(Protocol):
    def hit(self, key: str) -> float:
        """Record one request under `key`; 0 if allowed, else seconds until it would be."""


class SlidingWindowLimiter:
    """In-process: memory is bounded by `limit` timestamps per active key and `max_clients` keys."""

    def __init__(self, limit: int, window_s: float, *, max_clients: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window_s, self.max_clients, self.clock = limit, window_s, max_clients, clock
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()  # least recently seen first
        self._lock = threading.Lock()  # sync routes run in a thread pool

    def hit(self, client: str) -> float:
        now = self.clock()
        with self._lock:
            hits = self._hits.pop(client, None) or deque()
            while hits and hits[0] <= now - self.window_s:
                hits.popleft()
            self._hits[client] = hits  # re-inserted last: most recently seen
            if len(hits) >= self.limit:
                return hits[0] + self.window_s - now
            hits.append(now)
            self._forget_oldest()
            return 0.0

    def _forget_oldest(self) -> None:
        # A flood of distinct addresses must not grow memory without bound; forgetting the
        # least recently seen only ever lets one of them in sooner, never locks anyone out.
        while len(self._hits) > self.max_clients:
            self._hits.popitem(last=False)


# One round trip, atomic: drop hits older than the window, then admit (and record) or refuse.
_SLIDING_WINDOW = """
local key, now, window, limit, member = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
if redis.call('ZCARD', key) >= limit then
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return tostring(tonumber(oldest[2]) + window - now)
end
redis.call('ZADD', key, now, member)
redis.call('PEXPIRE', key, math.ceil(window * 1000))
return '0'
"""


class RedisWindowLimiter:
    """The same sliding window in a Redis sorted set per key, shared by all API instances."""

    def __init__(self, redis, limit: int, window_s: float, *, prefix: str = "finishline:rate:",
                 clock: Callable[[], float] = time.time) -> None:
        self.redis, self.limit, self.window_s, self.prefix, self.clock = redis, limit, window_s, prefix, clock
        self._script = redis.register_script(_SLIDING_WINDOW)

    def hit(self, key: str) -> float:
        try:
            wait = self._script(keys=[self.prefix + key],
                                args=[self.clock(), self.window_s, self.limit, uuid.uuid4().hex])
        except Exception as exc:  # redis down: fail open, say so
            log.warning("rate limit not checked, Redis unavailable: %s", exc)
            return 0.0
        return float(wait)


def client_key(address: str, scope: str) -> str:
    """The bucket of one client address for one event (IPv6 by /64)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return f"{scope}|{address}"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return f"{scope}|{ip.ipv4_mapped}"
        return f"{scope}|{ipaddress.ip_network(f'{ip}/64', strict=False)}"
    return f"{scope}|{ip}"


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def public_form_limiter(request: Request) -> Limiter:
    """The app's limiter for public form posts, made on first use from the app's settings."""
    state = request.app.state
    with _create_lock:
        if getattr(state, "public_form_limiter", None) is None:
            settings = state.settings
            if settings.redis_url:
                import redis

                state.public_form_limiter = RedisWindowLimiter(
                    redis.Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2),
                    settings.public_rate_limit, settings.public_rate_window_s)
            else:
                state.public_form_limiter = SlidingWindowLimiter(settings.public_rate_limit,
                                                                 settings.public_rate_window_s)
        return state.public_form_limiter


def limit_public_form(request: Request, scope: str) -> None:
    """Count one public post of the client for `scope` (an event); TooManyRequests (429, with
    `retry_after` seconds) when over the limit. Call before reading the body."""
    wait = public_form_limiter(request).hit(client_key(client_address(request), scope))
    if wait > 0:
        retry_after = max(1, math.ceil(wait))
        raise TooManyRequests(f"Too many submissions from your address; try again in {retry_after} s.",
                              code="rate_limited", retry_after=retry_after)
