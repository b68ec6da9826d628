"""Start lists: the organiser's CSV of bibs (and optionally names and e-mails) becomes runners.

Each good row creates a runner without a selfie, or updates the one with that bib (or, failing
that, with that e-mail); such runners are matched to photos by their bib alone (and, through the
face their bib was read on, by face: app/services/bib_matching.py) and e-mailed by `notify` like
everyone else when they have an e-mail.

What is all or nothing: a file we cannot parse as a whole (not UTF-8, not CSV, no header, no
`bib` column, too large) answers 422/413 and changes nothing. A parseable file imports its good
rows and lists every bad one in `rejected` with its line (the header is line 1) and a code:
`missing_bib`, `invalid_bib`, `invalid_email`, `name_too_long`, `wrong_field_count`,
`duplicate_bib`, `duplicate_email` (repeated within the file) and `email_taken` (the e-mail
belongs to the event's runner with another bib). The whole import is one transaction.

A start-list runner who later enrols with a selfie is the same runner: same e-mail (the ordinary
re-enrolment of runners.enrol), or same bib when the start-list row had no e-mail
(`claim_for_selfie`). A bib never moves a runner with
another e-mail on file: knowing someone's number must not hand you their gallery.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import func, select

from app.db import Runner, utcnow
from app.db.session import UnitOfWork
from app.errors import PayloadTooLarge, Unprocessable
from app.services import events as event_service
from app.services import matching
from models.bibs import canonical_bib
from app.jobs import MATCH_RUNNER

MAX_BYTES = 10 * 2**20  # ~200k rows of bib,name,email
MAX_ROWS = 100_000
BIB = re.compile(r"\d{1,6}")  # what the reader can read on a bib (models/bibs.py)
NAME_MAX = 200
COLUMNS = ("bib", "name", "email")


@dataclass(frozen=True)
class Rejected:
    line: int
    code: str
    detail: str


@dataclass
class ImportResult:
    created: int = 0
    updated: int = 0
    rejected: list[Rejected] = field(default_factory=list)


@dataclass(frozen=True)
class _Row:
    line: int
    bib: str
    name: str | None
    email: str | None


def parse(data: bytes) -> tuple[list[_Row], list[Rejected]]:
    """Good rows and rejected lines of a start list; a broken file raises (422/413)."""
    if len(data) > MAX_BYTES:
        raise PayloadTooLarge(f"A start list may be at most {MAX_BYTES // 2**20} MiB.", code="file_too_large")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise Unprocessable(f"The file is not UTF-8 text (byte {exc.start}); export the CSV as UTF-8.",
                            code="malformed_csv") from exc
    if "\x00" in text:
        raise Unprocessable("The file contains NUL bytes; it is not a CSV text file.", code="malformed_csv")
    if not text.strip():
        raise Unprocessable("The file is empty; send a CSV with a header row holding `bib`.", code="malformed_csv")
    first_line = text.lstrip().splitlines()[0]
    delimiter = max(",;\t", key=first_line.count)  # spreadsheets in many locales export ';'
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        header = [h.strip().lower() for h in next(reader)]
        while not any(header):  # blank lines before the header
            header = [h.strip().lower() for h in next(reader)]
        if "bib" not in header:
            raise Unprocessable(f"The header row ({', '.join(header)}) has no `bib` column.",
                                code="missing_bib_column")
        repeated = sorted({h for h in header if h in COLUMNS and header.count(h) > 1})
        if repeated:
            raise Unprocessable(f"The header names {', '.join(repeated)} more than once.", code="malformed_csv")
        index = {name: header.index(name) for name in COLUMNS if name in header}
        rows, rejected, seen_bibs, seen_emails = [], [], {}, {}
        for fields in reader:
            line = reader.line_num
            if not any(f.strip() for f in fields):
                continue  # blank line
            if len(rows) + len(rejected) >= MAX_ROWS:
                raise PayloadTooLarge(f"A start list may have at most {MAX_ROWS} rows.", code="too_many_rows")
            problem = _check(fields, header, index, seen_bibs, seen_emails, line)
            if isinstance(problem, Rejected):
                rejected.append(problem)
            else:
                rows.append(problem)
    except csv.Error as exc:
        raise Unprocessable(f"The file is not valid CSV at line {reader.line_num}: {exc}.", code="malformed_csv") from exc
    except StopIteration:
        raise Unprocessable("The file has no header row.", code="malformed_csv") from None
    return rows, rejected


def _check(fields: list[str], header: list[str], index: dict[str, int], seen_bibs: dict[str, int],
           seen_emails: dict[str, int], line: int) -> _Row | Rejected:
    if len(fields) != len(header):
        return Rejected(line, "wrong_field_count", f"{len(fields)} fields where the header has {len(header)}.")
    bib = fields[index["bib"]].strip()
    name = fields[index["name"]].strip() if "name" in index else ""
    email = fields[index["email"]].strip() if "email" in index else ""
    if not bib:
        return Rejected(line, "missing_bib", "The bib is empty.")
    if not BIB.fullmatch(bib):
        return Rejected(line, "invalid_bib", f"Bib {bib!r} is not 1 to 6 digits (only numbers can be read on photos).")
    if len(name) > NAME_MAX:
        return Rejected(line, "name_too_long", f"The name is longer than {NAME_MAX} characters.")
    if email:
        try:
            email = validate_email(email, check_deliverability=False).normalized
        except EmailNotValidError as exc:
            return Rejected(line, "invalid_email", f"{email!r} is not an e-mail address: {exc}")
    bib = canonical_bib(bib)  # "0582" is 582, as the reader stores it
    if bib in seen_bibs:
        return Rejected(line, "duplicate_bib", f"Bib {bib} is already on line {seen_bibs[bib]}.")
    if email and email.lower() in seen_emails:
        return Rejected(line, "duplicate_email", f"{email} is already on line {seen_emails[email.lower()]}.")
    seen_bibs[bib] = line
    if email:
        seen_emails[email.lower()] = line
    return _Row(line, bib, name or None, email or None)


def import_start_list(uow: UnitOfWork, event_id: str, data: bytes) -> ImportResult:
    """Create or update the event's runners from a start list; queue matching for each."""
    event_service.get_event(uow, event_id)
    matching.runners_changed(uow, event_id)  # locks the event; workers reload its runners (matching.py)
    rows, rejected = parse(data)
    result = ImportResult(rejected=list(rejected))
    session = uow.session
    by_bib = {r.bib: r for r in session.scalars(
        select(Runner).where(Runner.event_id == event_id, Runner.bib.in_([row.bib for row in rows]))
        .order_by(Runner.created_at, Runner.id))} if rows else {}
    emails = [row.email.lower() for row in rows if row.email]
    by_email = {r.email.lower(): r for r in session.scalars(
        select(Runner).where(Runner.event_id == event_id, func.lower(Runner.email).in_(emails)))} if emails else {}
    to_match = []
    for row in rows:
        runner = by_bib.get(row.bib)
        holder = by_email.get(row.email.lower()) if row.email else None
        if runner is None and holder is not None:
            if holder.bib and holder.bib != row.bib:
                result.rejected.append(Rejected(row.line, "email_taken",
                                                f"{row.email} belongs to the runner with bib {holder.bib}."))
                continue
            runner = holder
        elif runner is not None and holder is not None and holder is not runner:
            result.rejected.append(Rejected(row.line, "email_taken",
                                            f"{row.email} belongs to another runner of this event."))
            continue
        if runner is None:
            runner = Runner(event_id=event_id, name=row.name or f"Runner {row.bib}", email=row.email,
                            bib=row.bib, from_start_list=True, consent_at=utcnow())
            session.add(runner)
            result.created += 1
        else:
            runner.bib = row.bib
            if row.name:
                runner.name = row.name
            if row.email:
                runner.email = row.email
            result.updated += 1
        to_match.append(runner)
    session.flush()
    for runner in to_match:
        uow.send_task(MATCH_RUNNER, runner.id)
    result.rejected.sort(key=lambda r: r.line)
    return result


def claim_for_selfie(uow: UnitOfWork, event_id: str, *, bib: str | None) -> Runner | None:
    """The start-list runner a selfie with this bib completes: one imported without an e-mail
    (a runner with an e-mail is found by it, see runners.enrol). None: nobody."""
    if not bib:
        return None
    return uow.session.scalars(
        select(Runner).where(Runner.event_id == event_id, Runner.from_start_list.is_(True),
                             Runner.bib == bib, Runner.email.is_(None))
    ).first()
