"""The bulk upload's multipart body (POST /events/{id}/photos), parsed as it arrives.

`request.form()` would first spool the whole body (up to FINISHLINE_MAX_REQUEST_BYTES) to the
system temp dir, and the Uploader then copied every file again into its staging dir: twice the
request on disk before any work. Here python-multipart's callback parser runs over
`request.stream()` and writes each file of the field `files` straight into a staging file of the
Uploader (hashed and size-limited on the way), so the body is on disk once.

The files are only handed to the Uploader once the body has ended well: a body cut off, with a
wrong boundary or too many files stores nothing (422 `malformed_upload`, 413 `too_many_files`)
and leaves no staged file behind, as when the whole form was parsed first.

The dashboard's upload form without script comes through here too: its CSRF token is a plain
field before the files, which `check_fields` sees before the first file is written.
"""

from __future__ import annotations

import codecs
from collections.abc import AsyncIterator, Callable

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from app.errors import PayloadTooLarge, Unprocessable
from app.services.uploads import StagedFile

FIELD = "files"
MAX_FIELDS = 100  # plain (non-file) fields, which are ignored; what request.form(max_fields=100) allowed
MAX_FIELD_BYTES = 1 << 20  # each, as Starlette's form parser allows
MAX_HEADER_BYTES = 64 << 10  # a part's header line: python-multipart 0.0.18, our floor, has no bound of its own
FEED_BYTES = 256 << 10  # the body is parsed (and written to disk) in the thread pool, this much per hop


def malformed(detail: str) -> Unprocessable:
    # 422, as the published OpenAPI document has always said for this code (partners check it)
    return Unprocessable(detail, code="malformed_upload")


# sees the plain fields that came before the first file (all of them, when no file came); raises to
# refuse the body before a file is written
FieldCheck = Callable[[dict[str, str]], None]


class _Parts:
    """python-multipart's callbacks: each file part of `files` goes into its own staging file."""

    def __init__(self, new_file: Callable[[], StagedFile], max_files: int, charset: str,
                 check_fields: FieldCheck | None = None) -> None:
        self.new_file, self.max_files, self.charset = new_file, max_files, charset
        self.check_fields = check_fields
        self.files: list[tuple[str, StagedFile]] = []  # in the order they came
        self.fields: dict[str, bytes] = {}  # plain fields, kept only for check_fields
        self._field_name: str | None = None
        self.ended = False  # the closing boundary was seen
        self._file_count = self._field_count = self._field_bytes = 0
        self._current: StagedFile | None = None
        self._is_file = False
        self._header_name = self._header_value = self._disposition = b""

    def callbacks(self) -> dict[str, Callable]:
        return {"on_part_begin": self.on_part_begin, "on_header_field": self.on_header_field,
                "on_header_value": self.on_header_value, "on_header_end": self.on_header_end,
                "on_headers_finished": self.on_headers_finished, "on_part_data": self.on_part_data,
                "on_part_end": self.on_part_end, "on_end": self.on_end}

    def on_part_begin(self) -> None:
        self._disposition = b""

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]
        self._check_header()

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]
        self._check_header()

    def _check_header(self) -> None:
        if len(self._header_name) + len(self._header_value) > MAX_HEADER_BYTES:
            raise malformed(f"A part's header is longer than {MAX_HEADER_BYTES} bytes.")

    def on_header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = self._header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if b"name" not in options:
            raise malformed('A part has no Content-Disposition header with a "name".')
        self._is_file = b"filename" in options
        if self._is_file:
            self._check_fields()
            self._file_count += 1
            if self._file_count > self.max_files:
                raise PayloadTooLarge(f"Too many files. Maximum number of files is {self.max_files}. "
                                      f"(at most {self.max_files} per request)", code="too_many_files")
            if self._decode(options[b"name"]) == FIELD:  # files under other names are read past
                self._current = self.new_file()
                self.files.append((self._decode(options[b"filename"]), self._current))  # cleaned by the Uploader
        else:
            self._field_count, self._field_bytes = self._field_count + 1, 0
            if self._field_count > MAX_FIELDS:
                raise malformed(f"Too many fields. Maximum number of fields is {MAX_FIELDS}.")
            if self.check_fields is not None:
                self._field_name = self._decode(options[b"name"])
                self.fields[self._field_name] = b""

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._current is not None:
            self._current.write(data[start:end])
        elif not self._is_file:
            self._field_bytes += end - start
            if self._field_bytes > MAX_FIELD_BYTES:
                raise malformed(f"A field is larger than {MAX_FIELD_BYTES} bytes.")
            if self._field_name is not None:
                self.fields[self._field_name] += data[start:end]

    def on_part_end(self) -> None:
        if self._current is not None:
            self._current.close()  # 5000 parts must not hold 5000 open files
            self._current = None
        self._field_name = None

    def on_end(self) -> None:
        self._check_fields()
        self.ended = True

    def _check_fields(self) -> None:
        if self.check_fields is not None:
            check, self.check_fields = self.check_fields, None  # once
            check({name: self._decode(value) for name, value in self.fields.items()})

    def discard(self) -> None:
        for _, staged in self.files:
            staged.discard()

    def _decode(self, value: bytes) -> str:
        try:
            return value.decode(self.charset)
        except UnicodeDecodeError:
            return value.decode("latin-1")


def _boundary_and_charset(content_type: str) -> tuple[bytes, str] | None:
    """None when the body is not multipart at all (it then holds no files)."""
    kind, params = parse_options_header(content_type)
    if kind != b"multipart/form-data":
        return None
    if b"boundary" not in params:
        raise malformed("Missing boundary in multipart.")
    charset = params.get(b"charset", b"utf-8").decode("latin-1")
    try:
        charset = codecs.lookup(charset).name
    except LookupError:
        charset = "latin-1"
    return params[b"boundary"], charset


async def _chunks(stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The body in pieces of about FEED_BYTES (the server hands it over 64 KiB at a time)."""
    pending: list[bytes] = []
    size = 0
    async for chunk in stream:
        pending.append(chunk)
        size += len(chunk)
        if size >= FEED_BYTES:
            yield b"".join(pending)
            pending, size = [], 0
    if pending:
        yield b"".join(pending)


async def read_files(content_type: str, body: AsyncIterator[bytes], new_file: Callable[[], StagedFile], *,
                     max_files: int, check_fields: FieldCheck | None = None) -> list[tuple[str, StagedFile]]:
    """(filename, staged file) of every file in the field `files`, closed, in the body's order.

    Raises 422 `malformed_upload` for a body that is not a whole multipart message (the client
    gone mid-way included) and 413 `too_many_files`; the request's size limit (BodySizeLimit)
    raises from `body` itself, and `check_fields` (see FieldCheck) what it will. On any error
    every staged file is removed first.
    """
    found = _boundary_and_charset(content_type)
    if found is None:
        if check_fields is not None:
            check_fields({})
        return []
    boundary, charset = found
    parts = _Parts(new_file, max_files, charset, check_fields)
    try:
        try:
            parser = MultipartParser(boundary, parts.callbacks())
            async for chunk in _chunks(body):
                await run_in_threadpool(parser.write, chunk)
        except FormParserError as exc:
            raise malformed(f"The body is not valid multipart: {exc}") from exc
        except ClientDisconnect as exc:
            raise malformed("The connection closed before the whole body arrived.") from exc
        if not parts.ended:
            raise malformed("The body ends before its closing boundary: it was cut off.")
    except BaseException:
        parts.discard()
        raise
    return parts.files
