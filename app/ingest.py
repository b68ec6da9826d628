"""`finishline ingest`: upload files, folders and zips to an event over the HTTP API.

Safe to re-run: every local photo is hashed first and skipped if the event already holds the
same bytes. Zips are opened here and their members sent one by one, so a re-run skips the
members already uploaded instead of sending the whole archive again.
"""

from __future__ import annotations

import hashlib
import sys
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import httpx
from tqdm import tqdm

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png"}
BATCH_FILES = 16
BATCH_BYTES = 64 * 2**20


@dataclass(frozen=True)
class LocalPhoto:
    name: str  # shown in the summary and stored as the photo's filename
    size: int
    sha256: str
    open: Callable[[], BinaryIO]


def _sha256(stream: BinaryIO) -> str:
    digest = hashlib.sha256()
    while chunk := stream.read(2**20):
        digest.update(chunk)
    return digest.hexdigest()


def _from_file(path: Path) -> LocalPhoto:
    with path.open("rb") as f:
        return LocalPhoto(path.name, path.stat().st_size, _sha256(f), lambda: path.open("rb"))


def _from_zip(path: Path) -> Iterator[LocalPhoto]:
    with zipfile.ZipFile(path) as archive:
        for member in archive.infolist():
            parts = member.filename.split("/")
            if member.is_dir() or any(p.startswith(".") or p == "__MACOSX" for p in parts):
                continue
            if Path(member.filename).suffix.lower() not in PHOTO_SUFFIXES:
                continue
            with archive.open(member) as f:
                sha = _sha256(f)

            def opener(member=member) -> BinaryIO:
                return zipfile.ZipFile(path).open(member)

            yield LocalPhoto(f"{path.name}/{member.filename}", member.file_size, sha, opener)


def collect(paths: list[str], ignored: Counter) -> list[LocalPhoto]:
    """Photos named directly are always sent; inside folders only JPEG, PNG and ZIP files are."""
    found: list[LocalPhoto] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            candidates = sorted(p for p in path.rglob("*") if p.is_file()
                                and not any(part.startswith(".") for part in p.relative_to(path).parts))
        elif path.is_file():
            candidates = [path]
        else:
            ignored[f"{raw}: no such file or folder"] += 1
            continue
        for candidate in candidates:
            suffix = candidate.suffix.lower()
            if suffix == ".zip" and zipfile.is_zipfile(candidate):
                found.extend(_from_zip(candidate))
            elif suffix in PHOTO_SUFFIXES or not path.is_dir():
                found.append(_from_file(candidate))
            else:
                ignored["not a photo"] += 1
    return found


def existing_hashes(client: httpx.Client, event_id: str) -> set[str]:
    hashes, cursor = set(), None
    while True:
        params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
        page = _check(client.get(f"/api/v1/events/{event_id}/photos", params=params)).json()
        hashes.update(item["sha256"] for item in page["items"])
        cursor = page.get("next_cursor")
        if not cursor:
            return hashes


def _check(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 400:
        try:
            body = response.json()
            message = f"{body.get('title')}: {body.get('detail')} ({body.get('code')})"
        except ValueError:
            message = response.text[:300]
        raise SystemExit(f"error: the server answered {response.status_code}: {message}")
    return response


def _batches(photos: list[LocalPhoto]) -> Iterator[list[LocalPhoto]]:
    batch: list[LocalPhoto] = []
    size = 0
    for photo in photos:
        if batch and (len(batch) >= BATCH_FILES or size + photo.size > BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(photo)
        size += photo.size
    if batch:
        yield batch


def ingest(event_id: str, paths: list[str], *, api_url: str, api_key: str | None) -> int:
    if not api_key:
        print("error: an organiser API key is needed: --api-key or FINISHLINE_API_KEY", file=sys.stderr)
        return 2
    ignored: Counter = Counter()
    photos = collect(paths, ignored)
    headers = {"Authorization": f"Bearer {api_key}"}
    timeout = httpx.Timeout(30.0, read=600.0, write=600.0)
    uploaded = duplicates = 0
    rejected: list[tuple[str, str, str]] = []
    with httpx.Client(base_url=api_url, headers=headers, timeout=timeout) as client:
        already = existing_hashes(client, event_id)
        todo = [p for p in photos if p.sha256 not in already]
        skipped = len(photos) - len(todo)
        with tqdm(total=sum(p.size for p in todo), unit="B", unit_scale=True, desc="uploading",
                  file=sys.stderr) as bar:
            for batch in _batches(todo):
                streams = [p.open() for p in batch]
                try:
                    files = [("files", (p.name, s)) for p, s in zip(batch, streams)]
                    body = _check(client.post(f"/api/v1/events/{event_id}/photos", files=files)).json()
                finally:
                    for s in streams:
                        s.close()
                for item in body["photos"]:
                    duplicates += item["duplicate"]
                    uploaded += not item["duplicate"]
                rejected += [(r["filename"], r["code"], r["detail"]) for r in body["rejected"]]
                bar.update(sum(p.size for p in batch))
    print(f"uploaded: {uploaded}")
    print(f"already there (skipped): {skipped}")
    print(f"duplicates: {duplicates}")
    print(f"rejected: {len(rejected)}")
    for filename, code, detail in rejected:
        print(f"  {filename}: {code}: {detail}")
    for reason, count in ignored.items():
        print(f"ignored ({reason}): {count}")
    return 0
