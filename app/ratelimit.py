"""A small in-process rate limiter for public (keyless) routes, such as the selfie form.

Sliding-window log: for each client address we keep the times of its recent requests and refuse
one more when `limit` of them fall inside the last `window_s` seconds. Exact, simple, and memory
is bounded by `limit` timestamps per active address plus a cap on how many addresses we track.

The state lives in this API process only. One `finishline api` or `finishline run` behind one
address is the embedded setup this is for; a deployment with several API instances gets each
instance's own allowance (N instances: up to N x limit) and needs a shared store (e.g. a Redis
counter keyed by address) to enforce one limit across them.

The client address is `request.client.host`: behind a reverse proxy, run uvicorn with
`--proxy-headers` and `--forwarded-allow-ips` so this is the runner's address, not the proxy's.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from fastapi import Request

from app.errors import TooManyRequests

_create_lock = threading.Lock()


class SlidingWindowLimiter:
    def __init__(self, limit: int, window_s: float, *, max_clients: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window_s, self.max_clients, self.clock = limit, window_s, max_clients, clock
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()  # least recently seen first
        self._lock = threading.Lock()  # sync routes run in a thread pool

    def hit(self, client: str) -> float:
        """Record one request from `client`; 0 if allowed, else seconds until it would be."""
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


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def public_form_limiter(request: Request) -> SlidingWindowLimiter:
    """The app's limiter for public form posts, made on first use from the app's settings."""
    state = request.app.state
    with _create_lock:
        if getattr(state, "public_form_limiter", None) is None:
            settings = state.settings
            state.public_form_limiter = SlidingWindowLimiter(settings.public_rate_limit,
                                                             settings.public_rate_window_s)
        return state.public_form_limiter


def limit_public_form(request: Request) -> None:
    """Dependency for keyless POST routes: 429 problem+json with Retry-After when over the limit.

    Use as `dependencies=[Depends(limit_public_form)]`. HTML routes may catch `TooManyRequests`
    to render an error page instead; its `retry_after` says when to try again.
    """
    wait = public_form_limiter(request).hit(client_address(request))
    if wait > 0:
        retry_after = max(1, math.ceil(wait))
        raise TooManyRequests(f"Too many submissions from your address; try again in {retry_after} s.",
                              code="rate_limited", retry_after=retry_after)
