"""How large a zip's central directory is, read from its end records before zipfile parses it.

`zipfile.ZipFile(path)` reads the whole central directory into memory and makes a ZipInfo of
every entry: a 4 GB zip of tiny entries is tens of millions of objects, an out-of-memory of the
process. The end-of-central-directory record (and, for zip64 archives, the zip64 record it points
to) says how many entries there are and how many bytes they take, so the Uploader refuses such
an archive before opening it.

The records are looked for where zipfile looks (the last 22 bytes, else the last signature in the
final 64 KiB; the zip64 record just before its locator, or where the locator says). When they
disagree the larger values count, so no version of zipfile reads more than was checked.

The declared count is only a claim: zipfile reads entries until it has consumed the declared
directory size, so a record saying 10 entries over 50 MB of 46-byte entries would still become a
million ZipInfo objects. Where the size is within bounds, the entries in it are counted too (their
fixed headers only, no objects), and the larger number counts.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

END = struct.Struct("<4s4H2LH")  # signature, disks, entries here, entries, size, offset, comment length
END_SIGNATURE = b"PK\x05\x06"
ZIP64_LOCATOR = struct.Struct("<4sLQL")  # signature, disk, offset of the zip64 record, disks
ZIP64_LOCATOR_SIGNATURE = b"PK\x06\x07"
ZIP64_END = struct.Struct("<4sQ2H2L4Q")  # ..., entries here, entries, size, offset
ZIP64_END_SIGNATURE = b"PK\x06\x06"
MAX_COMMENT = 0xFFFF
CENTRAL = struct.Struct("<4s24x3H12x")  # signature, ..., name, extra and comment lengths, ...
CENTRAL_SIGNATURE = b"PK\x01\x02"


@dataclass(frozen=True)
class Directory:
    entries: int
    size: int  # bytes


def read_directory(path: Path, *, max_bytes: int) -> Directory | None:
    """The entry count and size of the archive's central directory; None without an end record
    (zipfile then refuses the file as not a zip). The entries of a directory up to `max_bytes`
    are counted, not only taken from the end record's word (a million take about half a second)."""
    with path.open("rb") as fp:
        fp.seek(0, 2)
        file_size = fp.tell()
        tail_start = max(file_size - END.size - MAX_COMMENT, 0)
        fp.seek(tail_start)
        tail = fp.read()
        at = len(tail) - END.size
        if not (at >= 0 and tail[at:at + 4] == END_SIGNATURE and tail[-2:] == b"\0\0"):
            at = tail.rfind(END_SIGNATURE)
            if at < 0 or len(tail) - at < END.size:
                return None
        *_, entries, size, _offset, _comment = END.unpack_from(tail, at)
        start = tail_start + at - size  # where zipfile starts reading entries
        zip64 = _zip64_records(fp, tail_start + at)
        if zip64:
            entries, size = max(d.entries for d in zip64), max(d.size for d in zip64)
            start = tail_start + at - ZIP64_LOCATOR.size - ZIP64_END.size - size
        if size <= max_bytes:
            entries = max(entries, _count_entries(fp, start, size))
        return Directory(entries, size)


def _count_entries(fp: BinaryIO, start: int, size: int) -> int:
    """How many entries zipfile would read from the directory at `start` (it stops with an error
    at the first broken header)."""
    if start < 0:
        return 0
    fp.seek(start)
    data = fp.read(size)
    count = at = 0
    while at + CENTRAL.size <= len(data):
        signature, name, extra, comment = CENTRAL.unpack_from(data, at)
        if signature != CENTRAL_SIGNATURE:
            break
        at += CENTRAL.size + name + extra + comment
        count += 1
    return count


def _zip64_records(fp: BinaryIO, end_at: int) -> list[Directory]:
    locator_at = end_at - ZIP64_LOCATOR.size
    if locator_at < 0:
        return []
    fp.seek(locator_at)
    data = fp.read(ZIP64_LOCATOR.size)
    signature, _disk, record_at, _disks = ZIP64_LOCATOR.unpack(data)
    if signature != ZIP64_LOCATOR_SIGNATURE:
        return []
    found = []
    for at in {locator_at - ZIP64_END.size, record_at}:  # where zipfile looks, old and new
        if at < 0:
            continue
        fp.seek(at)
        data = fp.read(ZIP64_END.size)
        if len(data) == ZIP64_END.size and data[:4] == ZIP64_END_SIGNATURE:
            *_, entries, size, _offset = ZIP64_END.unpack(data)
            found.append(Directory(entries, size))
    return found
