"""What every response tells browsers, and which form posts a browser may make (issue 12.9).

- Headers on every response: no MIME sniffing, no framing (CSP `frame-ancestors` and, for old
  browsers, X-Frame-Options), no Referer (page URLs carry secret tokens), and one
  Content-Security-Policy that allows only our own scripts, styles and images. A route that needs
  a different policy (e.g. the OpenAPI UI) sets its own header; this layer only fills in missing ones.
- Cross-site posts are refused with 403 on the pages (everything outside /api/): a browser says
  where a request comes from in `Sec-Fetch-Site` (modern browsers) or `Origin`. Posts that carry
  neither come from no browser context at all (a mail provider's RFC 8058 one-click unsubscribe,
  curl) and cannot have been forged by another site, so they pass. The API is not checked: it needs
  a Bearer key that another site cannot make a browser send.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
)
# The dashboard's e-mail sample, a document of its own in a sandboxed frame of the send page: the
# e-mail's inline styles and embedded thumbnails; no script, no form, framed by our pages only.
EMAIL_SAMPLE_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'; "
    "base-uri 'none'; form-action 'none'; sandbox allow-popups allow-popups-to-escape-sandbox"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
SAFE_FETCH_SITES = {"same-origin", "none"}  # "none": the user typed it or used a bookmark


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def is_cross_site(headers: Headers, own_origins: set[str]) -> bool:
    """True when the browser says this request was started by another site.

    `Sec-Fetch-Site` decides when present: scripts cannot set it. Without it (older browsers),
    a foreign `Origin` is refused. `Origin: null` is not: our pages send no Referer
    (`no-referrer`), and under that policy browsers send `null` for their own same-origin posts.
    """
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site.lower() not in SAFE_FETCH_SITES
    origin = headers.get("origin")
    return origin is not None and origin.lower() != "null" and origin.lower() not in own_origins


class BrowserPolicy:
    """ASGI middleware: the security headers on every response, 403 for cross-site page posts."""

    def __init__(self, app: ASGIApp, public_base_url: str) -> None:
        self.app = app
        self.public_origin = origin_of(public_base_url)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        if scope["method"] in UNSAFE_METHODS and not scope["path"].startswith("/api/"):
            headers = Headers(scope=scope)
            # The origin we are published at, and the one this request reached (same thing
            # unless a proxy rewrites Host, or PUBLIC_BASE_URL is not set right).
            own = {self.public_origin, f"{scope.get('scheme', 'http')}://{headers.get('host', '')}".lower()}
            if is_cross_site(headers, own):
                await self._refuse(scope, receive, send_with_headers)
                return
        await self.app(scope, receive, send_with_headers)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        from app.pages.templating import message  # pages sit above this layer

        response = message("Not allowed", "This form can only be sent from this site's own pages.", 403)
        await response(scope, receive, send)
