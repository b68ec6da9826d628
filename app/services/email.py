"""E-mail: building the runner's message, and handing it to an SMTP server or the outbox folder.

No database here: app/services/notify.py decides what to send and records what happened.

Thumbnails are embedded as inline CID images (multipart/related), not linked: mail clients block
remote images by default, loading them would tell us who opened what, and a link would need the
thumbnails served publicly by URL. Four 400-px JPEGs add roughly 150 kB, which every provider takes.

The sending side reports its outcome by exception, because the difference matters for exactly-once:
`NotSent` means the server certainly did not accept the message (safe to retry), `MaybeSent` means
the connection broke while the message body was being transferred (never resend automatically).
"""

from __future__ import annotations

import base64
import logging
import os
import re
import smtplib
import ssl
import tempfile
from dataclasses import dataclass
from email.headerregistry import HeaderRegistry, UnstructuredHeader
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import formataddr, formatdate, make_msgid, parseaddr
from pathlib import Path
from types import TracebackType

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from app.config import Settings

log = logging.getLogger(__name__)
TEMPLATES = Path(__file__).resolve().parents[1] / "pages" / "templates" / "email"
MAX_THUMBNAILS = 4
SMTP_TIMEOUT_S = 30

_templates = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,  # a typo in a template fails the test suite, not a runner's e-mail
    trim_blocks=True,
    lstrip_blocks=True,
)


class NotSent(Exception):
    """The server did not take the message: unreachable, or it answered with an error code."""

    def __init__(self, detail: str, *, permanent: bool = False) -> None:
        super().__init__(detail)
        self.permanent = permanent  # a 5xx answer: retrying the same message will not help


class MaybeSent(Exception):
    """The connection broke during DATA: the server may have accepted the message."""


@dataclass(frozen=True)
class Thumbnail:
    photo_id: str
    jpeg: bytes


@dataclass(frozen=True)
class RunnerEmail:
    """Everything the message says; notify.py fills it in."""

    runner_name: str
    runner_email: str
    event_name: str
    new_photos: int  # announced by this message
    total_photos: int  # in the gallery, this message's included
    thumbnails: list[Thumbnail]
    gallery_url: str
    delete_url: str
    unsubscribe_url: str
    message_id: str


class UrlListHeader(UnstructuredHeader):
    """`List-Unsubscribe: <https://...>` written as it is (RFC 2369, RFC 8058).

    The stdlib folds a token longer than 78 characters by RFC 2047-encoding it
    (`=?utf-8?q?=3Chttps=3A...`), and mail providers then find no URL to POST to: one-click
    unsubscribe silently stops working. A URL header is ASCII without spaces, so it is written on
    one line (well inside the 998-character limit of RFC 5322).
    """

    @classmethod
    def parse(cls, value, kwds):
        if not value.isascii() or any(ch.isspace() for ch in value) or len(value) > 900:
            raise ValueError(f"not a header-safe URL list: {value!r}")
        super().parse(value, kwds)

    def fold(self, *, policy) -> str:
        return f"{self.name}: {self}{policy.linesep}"


_headers = HeaderRegistry()
_headers.map_to_type("list-unsubscribe", UrlListHeader)
MESSAGE_POLICY = SMTP_POLICY.clone(header_factory=_headers)


def message_id_for(delivery_id: str, settings: Settings) -> str:
    """Deterministic per delivery, so a resend (were one ever made) is recognisably the same message."""
    domain = parseaddr(settings.smtp_from)[1].rpartition("@")[2] or "finishline.invalid"
    return f"<{delivery_id}@{domain}>"


def build_message(email: RunnerEmail, *, sender: str) -> EmailMessage:
    thumbs = [(t, make_msgid(domain="finishline")) for t in email.thumbnails[:MAX_THUMBNAILS]]
    context = {"email": email, "first_name": email.runner_name.split()[0] if email.runner_name.strip() else "",
               "thumbs": [(t.photo_id, cid[1:-1]) for t, cid in thumbs]}
    message = EmailMessage(policy=MESSAGE_POLICY)
    message["Subject"] = (f"{email.new_photos} new photo{'s' if email.new_photos != 1 else ''} "
                          f"of you from {email.event_name}")
    message["From"] = sender
    message["To"] = formataddr((email.runner_name, email.runner_email))
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = email.message_id
    # RFC 8058 one-click unsubscribe: mailbox providers POST to this URL, no login, no confirmation.
    message["List-Unsubscribe"] = f"<{email.unsubscribe_url}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no out-of-office replies to us
    message.set_content(_templates.get_template("message.txt").render(**context))
    message.add_alternative(_templates.get_template("message.html").render(**context), subtype="html")
    html_part = message.get_payload()[1]
    for thumb, cid in thumbs:
        html_part.add_related(thumb.jpeg, "image", "jpeg", cid=cid, filename=f"{thumb.photo_id}.jpg",
                              disposition="inline")
    return message


def browser_html(message: EmailMessage) -> str:
    """The message's HTML part as a browser can show it: inline images (`cid:`) become data: URIs."""
    images = {}
    related = message.get_body(("related",))
    for part in related.iter_parts() if related is not None else ():
        if part.get_content_maintype() == "image" and part["Content-ID"]:
            data = base64.b64encode(part.get_content()).decode()
            images[part["Content-ID"].strip("<>")] = f"data:{part.get_content_type()};base64,{data}"
    html = message.get_body(("html",)).get_content()
    return re.sub(r'src="cid:([^"]+)"', lambda m: f'src="{images.get(m.group(1), "")}"', html)


class Outbox:
    """No SMTP_HOST: each message becomes `<outbox_dir>/<delivery id>.eml`. Rewriting it is harmless."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def send(self, message: EmailMessage, *, name: str) -> str:
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.folder / f"{name}.eml"
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(message.as_bytes(policy=SMTP_POLICY))
        os.replace(tmp, target)  # a reader never sees half a message
        log.info("no SMTP_HOST set: e-mail written to %s", target.resolve())  # no address: logs outlive erasure
        return str(target.resolve())


class SmtpConnection:
    """One SMTP session. Connecting and logging in happen on enter, before anything is claimed, so
    the usual failures (server down, bad password) leave the delivery untouched and retryable."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.smtp: smtplib.SMTP | None = None

    def __enter__(self) -> SmtpConnection:
        s = self.settings
        try:
            if s.smtp_security == "tls":
                self.smtp = smtplib.SMTP_SSL(s.smtp_host, s.smtp_port, timeout=SMTP_TIMEOUT_S,
                                             context=ssl.create_default_context())
            else:
                self.smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=SMTP_TIMEOUT_S)
            self.smtp.ehlo()
            if s.smtp_security == "starttls":
                self.smtp.starttls(context=ssl.create_default_context())
                self.smtp.ehlo()
            if s.smtp_user:
                self.smtp.login(s.smtp_user, s.smtp_password or "")
        except (smtplib.SMTPException, OSError) as exc:
            self._close()
            raise NotSent(f"cannot reach SMTP server {s.smtp_host}:{s.smtp_port}: {exc!r}") from exc
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._close()

    def _close(self) -> None:
        if self.smtp is not None:
            try:
                self.smtp.quit()
            except (smtplib.SMTPException, OSError):
                self.smtp.close()
            self.smtp = None

    def send(self, message: EmailMessage, *, name: str) -> str:
        """MAIL, RCPT and DATA one by one: a failure before DATA certainly sent nothing."""
        assert self.smtp is not None, "use SmtpConnection as a context manager"
        sender = parseaddr(self.settings.smtp_from)[1]
        recipient = parseaddr(str(message["To"]))[1]
        try:
            code, reply = self.smtp.mail(sender)
            if code != 250:
                raise NotSent(f"MAIL FROM refused: {code} {reply!r}", permanent=code >= 500)
            code, reply = self.smtp.rcpt(recipient)
            if code not in (250, 251):
                raise NotSent(f"RCPT TO {recipient} refused: {code} {reply!r}", permanent=code >= 500)
        except (smtplib.SMTPException, OSError) as exc:
            raise NotSent(f"SMTP error before DATA: {exc!r}") from exc
        try:
            # data() raises for a refused DATA command but returns the reply to the message itself
            code, reply = self.smtp.data(message.as_bytes(policy=SMTP_POLICY))
        except smtplib.SMTPDataError as exc:  # the server answered, and the answer was no
            raise NotSent(f"DATA refused: {exc.smtp_code} {exc.smtp_error!r}",
                          permanent=exc.smtp_code >= 500) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise MaybeSent(f"connection lost during DATA: {exc!r}") from exc
        if code != 250:
            raise NotSent(f"message refused: {code} {reply!r}", permanent=code >= 500)
        return f"smtp://{self.settings.smtp_host}:{self.settings.smtp_port}"


def open_mailer(settings: Settings) -> Outbox | SmtpConnection:
    return SmtpConnection(settings) if settings.smtp_host else Outbox(settings.outbox_dir)
