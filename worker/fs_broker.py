"""The embedded broker: kombu's filesystem transport, made safe against bad message files.

kombu's own transport (5.x) has two faults that stop the embedded setup:
- a reader can take a message file while its writer is still writing it (the file is created
  under its final name, then filled), and any empty or half-written file makes `_get` raise
  JSONDecodeError, which Celery's consumer treats as unrecoverable: the worker exits;
- a taken file is moved to the system temp dir, which can be another file system: then the move
  is a copy, and two workers may both read the same message.

Here a message is written under a temporary name and renamed into the queue (readers only ever
see whole files), taken by a rename inside the broker folder (atomic: one reader wins), and a
file that still is not a readable message is moved to `<broker dir>/bad/` with a log line,
never raised. Whatever work it carried is re-queued by the sweeper (photos pending too long).
"""

from __future__ import annotations

import logging
import os
import uuid
from time import monotonic

from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads
from kombu.exceptions import ChannelError

log = logging.getLogger(__name__)
ALIAS = "finishline-fs"


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        # ".tmp-…" never matches "<queue>.msg", so no reader picks it up before the rename
        tmp = os.path.join(self.data_folder_out, f".tmp-{uuid.uuid4()}")
        try:
            with open(tmp, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
            os.replace(tmp, os.path.join(self.data_folder_out, name))
        except OSError as exc:
            raise ChannelError(f"Cannot add file {name!r} to directory") from exc

    def _get(self, queue):
        wanted = f"{queue}.msg"
        taken_dir = self._folder("taken")
        for name in sorted(os.listdir(self.data_folder_in)):
            if name.partition(".")[2] != wanted:
                continue
            taken = os.path.join(taken_dir, name)
            try:
                os.rename(os.path.join(self.data_folder_in, name), taken)
            except OSError:
                continue  # another consumer took it first
            try:
                with open(taken, "rb") as f:
                    raw = f.read()
            except OSError as exc:
                raise ChannelError(f"Cannot read file {taken!r} from queue.") from exc
            try:
                payload = self._check(raw)
            except Exception as exc:
                self._set_aside(taken, name, exc)
                continue
            os.remove(taken)
            return payload
        raise filesystem.Empty()

    def _check(self, raw: bytes) -> dict:
        """The payload if it is a whole kombu message; raises otherwise."""
        payload = loads(bytes_to_str(raw))
        properties = payload["properties"]
        properties["delivery_tag"]  # noqa: B018 - kombu's Message needs it
        if payload.get("body"):
            self.decode_body(payload["body"], properties.get("body_encoding"))
        return payload

    def _set_aside(self, path: str, name: str, exc: Exception) -> None:
        target = os.path.join(self._folder("bad"), name)
        os.replace(path, target)
        log.error("broker: set aside a bad message file (%d bytes) as %s: %s: %s",
                  os.path.getsize(target), target, type(exc).__name__, exc)

    def _folder(self, name: str) -> str:
        """A folder beside the queue folder (same file system, so renames are atomic)."""
        folder = os.path.join(os.path.dirname(os.path.abspath(self.data_folder_in)), name)
        os.makedirs(folder, exist_ok=True)
        return folder


class Transport(filesystem.Transport):
    Channel = Channel


def register() -> str:
    """Make `finishline-fs://` a broker URL kombu knows; returns the URL."""
    TRANSPORT_ALIASES.setdefault(ALIAS, f"{__name__}:Transport")
    return f"{ALIAS}://"
