"""Settings: one object, read from the environment once at start-up, passed to whoever needs it.

The defaults are the embedded single-machine setup: SQLite, a local photo folder and a broker
that needs no server, all under FINISHLINE_DATA_DIR.
"""

from __future__ import annotations

import os
import secrets
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Secrets people copy from examples; refusing them beats signing gallery links with "changeme".
PLACEHOLDER_SECRETS = {"changeme", "change-me", "secret", "please-change", "xxx", ""}
# Default cosine thresholds per face backend (README: "Matching threshold" has the calibration).
DEFAULT_MATCH_THRESHOLDS = {"yunet-sface": 0.48, "facenet": 0.61}  # bench/calibrate.py


def _env(name: str) -> AliasChoices:
    return AliasChoices(name)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", populate_by_name=True)

    # --- the public contract (API.md) ---
    data_dir: Path = Field(Path("./data"), validation_alias=_env("FINISHLINE_DATA_DIR"))
    database_url: str | None = Field(None, validation_alias=_env("DATABASE_URL"))
    redis_url: str | None = Field(None, validation_alias=_env("REDIS_URL"))
    storage_url: str | None = Field(None, validation_alias=_env("STORAGE_URL"))
    smtp_host: str | None = Field(None, validation_alias=_env("SMTP_HOST"))
    smtp_port: int = Field(25, validation_alias=_env("SMTP_PORT"))
    smtp_user: str | None = Field(None, validation_alias=_env("SMTP_USER"))
    smtp_password: str | None = Field(None, validation_alias=_env("SMTP_PASSWORD"))
    smtp_from: str = Field("Finishline <photos@localhost>", validation_alias=_env("SMTP_FROM"))
    smtp_security: Literal["none", "starttls", "tls"] = Field(
        "none", validation_alias=_env("SMTP_SECURITY")
    )
    public_base_url: str = Field("http://127.0.0.1:8000", validation_alias=_env("PUBLIC_BASE_URL"))
    device: Literal["auto", "cpu", "cuda"] = Field("auto", validation_alias=_env("FINISHLINE_DEVICE"))
    # One key, or several separated by commas for rotation: the first signs, every one verifies.
    secret_key: str | None = Field(None, validation_alias=_env("FINISHLINE_SECRET_KEY"))

    # --- our own knobs ---
    face_backend: Literal["yunet-sface", "facenet"] = Field(
        "yunet-sface", validation_alias=_env("FINISHLINE_FACE_BACKEND")
    )
    # what runs YuNet + SFace: "auto" is openvino on CPU and torch on CUDA (models/yunet_sface.py)
    face_engine: Literal["auto", "openvino", "opencv", "torch"] = Field(
        "auto", validation_alias=_env("FINISHLINE_FACE_ENGINE")
    )
    facenet_weights: Literal["casia", "vggface2"] = Field(
        "casia", validation_alias=_env("FINISHLINE_FACENET_WEIGHTS")
    )
    detect_long_side: int = Field(1600, ge=320, validation_alias=_env("FINISHLINE_DETECT_LONG_SIDE"))
    min_face_px: int = Field(24, ge=8, validation_alias=_env("FINISHLINE_MIN_FACE_PX"))
    embed_batch_size: int = Field(32, ge=1, validation_alias=_env("FINISHLINE_EMBED_BATCH_SIZE"))
    # photos per worker task: 1 suits CPU workers; ~8 lets a GPU worker embed several photos' faces in one batch
    photos_per_task: int = Field(1, ge=1, le=64, validation_alias=_env("FINISHLINE_PHOTOS_PER_TASK"))
    # bib numbers (models/bibs.py): read them on every photo; the whole-photo pass (for runners
    # whose face is not seen) runs on a copy this long (0: torso regions below faces only)
    read_bibs: bool = Field(True, validation_alias=_env("FINISHLINE_READ_BIBS"))
    bib_whole_long_side: int = Field(384, ge=0, le=4096, validation_alias=_env("FINISHLINE_BIB_WHOLE_LONG_SIDE"))
    max_file_bytes: int = Field(60 * 2**20, validation_alias=_env("FINISHLINE_MAX_FILE_BYTES"))
    max_request_bytes: int = Field(4 * 2**30, validation_alias=_env("FINISHLINE_MAX_REQUEST_BYTES"))
    max_image_pixels: int = Field(120_000_000, validation_alias=_env("FINISHLINE_MAX_IMAGE_PIXELS"))
    # the dashboard uploads in pieces of this size; a dropped connection costs at most one piece
    upload_chunk_bytes: int = Field(8 * 2**20, ge=64 * 2**10, le=32 * 2**20,
                                    validation_alias=_env("FINISHLINE_UPLOAD_CHUNK_BYTES"))
    max_files_per_request: int = Field(5000, validation_alias=_env("FINISHLINE_MAX_FILES_PER_REQUEST"))
    # Zip bombs: total bytes one zip may expand to, and the highest compression ratio of a member
    # (JPEGs barely compress; 1000:1 is a run of zeros).
    max_archive_bytes: int = Field(16 * 2**30, validation_alias=_env("FINISHLINE_MAX_ARCHIVE_BYTES"))
    max_compression_ratio: float = Field(100.0, gt=1, validation_alias=_env("FINISHLINE_MAX_COMPRESSION_RATIO"))
    max_archive_entries: int = Field(50_000, ge=1, validation_alias=_env("FINISHLINE_MAX_ARCHIVE_ENTRIES"))
    # The public selfie form: at most this many submissions per client address and event per window
    # (app/ratelimit.py); sized for a finish line where many runners share one Wi-Fi or carrier address.
    public_rate_limit: int = Field(30, ge=1, validation_alias=_env("FINISHLINE_PUBLIC_RATE_LIMIT"))
    public_rate_window_s: float = Field(60.0, gt=0, validation_alias=_env("FINISHLINE_PUBLIC_RATE_WINDOW_S"))
    # Reverse proxies whose X-Forwarded-For is believed: addresses or networks, comma-separated
    # ("*" trusts any peer: only when the API is reachable through the proxy alone).
    trusted_proxies: str = Field("127.0.0.1,::1", validation_alias=_env("FINISHLINE_TRUSTED_PROXIES"))
    # Default per-event retention of biometric templates, in days after the event date (privacy.py).
    retention_days: int = Field(90, ge=1, le=3650, validation_alias=_env("FINISHLINE_RETENTION_DAYS"))
    # Request heads (request line + headers): at most this many bytes (431), complete within this
    # many seconds of the connection or the head's first byte (408), see app/server.py.
    max_header_bytes: int = Field(64 * 1024, ge=8 * 1024, validation_alias=_env("FINISHLINE_MAX_HEADER_BYTES"))
    header_timeout_s: float = Field(10.0, gt=0, validation_alias=_env("FINISHLINE_HEADER_TIMEOUT_S"))
    # A photo queued or claimed longer than this is re-queued by the sweeper (lost message, dead worker).
    stale_after_s: int = Field(600, ge=10, validation_alias=_env("FINISHLINE_STALE_AFTER_S"))
    # A photo whose processing raises anything but a decode error is tried this often in all (the
    # sweeper re-queues it after stale_after between tries), then it is `failed` with the reason.
    photo_max_attempts: int = Field(3, ge=1, le=100, validation_alias=_env("FINISHLINE_PHOTO_MAX_ATTEMPTS"))
    sweep_every_s: int = Field(60, ge=1, validation_alias=_env("FINISHLINE_SWEEP_EVERY_S"))
    # Database connections per process (API or worker): pool size, overflow, and how long a request
    # waits for a free one before it is answered 503 with Retry-After.
    db_pool_size: int = Field(10, ge=1, validation_alias=_env("FINISHLINE_DB_POOL_SIZE"))
    db_max_overflow: int = Field(20, ge=0, validation_alias=_env("FINISHLINE_DB_MAX_OVERFLOW"))
    db_pool_timeout_s: float = Field(10.0, gt=0, validation_alias=_env("FINISHLINE_DB_POOL_TIMEOUT_S"))
    # Each worker writes a heartbeat this often; /readyz calls the workers gone after three missed.
    worker_heartbeat_s: float = Field(10.0, gt=0, validation_alias=_env("FINISHLINE_WORKER_HEARTBEAT_S"))
    # `finishline run` restarts a worker that exits: after this many seconds, doubling up to 60 s
    # while it keeps failing (back to this once it has run for a minute).
    worker_restart_backoff_s: float = Field(1.0, gt=0, validation_alias=_env("FINISHLINE_WORKER_RESTART_BACKOFF_S"))
    worker_concurrency: int | None = Field(None, validation_alias=_env("FINISHLINE_WORKER_CONCURRENCY"))
    # Webhook URLs resolving to loopback or private addresses are refused (at creation and at each
    # send, against DNS rebinding) unless this is true: tests, or receivers on a private network.
    webhook_allow_private: bool = Field(False, validation_alias=_env("FINISHLINE_WEBHOOK_ALLOW_PRIVATE"))

    @field_validator("public_base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("secret_key")
    @classmethod
    def _refuse_placeholders(cls, value: str | None) -> str | None:
        if value is None:
            return None
        for key in value.split(","):
            if key.strip().lower() in PLACEHOLDER_SECRETS or len(key.strip()) < 16:
                raise ValueError(
                    "FINISHLINE_SECRET_KEY holds a placeholder or a key shorter than 16 characters; "
                    "set a long random value (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
                )
        return value

    @model_validator(mode="after")
    def _shared_setups_share_one_key(self) -> "Settings":
        # With a database or broker server, API and workers usually run on several hosts; each
        # would make its own key file, and links e-mailed by a worker would not open on the API.
        if self.secret_key is None and (self.database_url or self.redis_url):
            raise ValueError(
                "FINISHLINE_SECRET_KEY must be set when DATABASE_URL or REDIS_URL is set: every API "
                "and worker host must sign and check links with the same key"
            )
        return self

    # --- derived values ---
    @property
    def engine_options(self) -> dict[str, float]:
        return {"pool_size": self.db_pool_size, "max_overflow": self.db_max_overflow,
                "pool_timeout_s": self.db_pool_timeout_s}

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'finishline.db').resolve()}"

    @property
    def uses_embedded_broker(self) -> bool:
        return not self.redis_url

    @property
    def broker_dir(self) -> Path:
        return self.data_dir / "broker"

    @property
    def photos_dir(self) -> Path:
        return self.data_dir / "photos"

    @property
    def model_cache_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def outbox_dir(self) -> Path:
        return self.data_dir / "outbox"

    @property
    def default_match_threshold(self) -> float:
        return DEFAULT_MATCH_THRESHOLDS[self.face_backend]

    @cached_property
    def signing_keys(self) -> tuple[str, ...]:
        """FINISHLINE_SECRET_KEY's keys, newest first, or on the embedded setup one random key
        kept in the data dir."""
        if self.secret_key:
            return tuple(key.strip() for key in self.secret_key.split(","))
        key_file = self.data_dir / "secret_key"
        if not key_file.exists():
            key_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = key_file.with_name(f"secret_key.{secrets.token_hex(8)}.tmp")
            tmp.write_text(secrets.token_urlsafe(48))
            tmp.chmod(0o600)
            try:
                os.link(tmp, key_file)  # first writer wins; API and worker may race on first start
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        return (key_file.read_text().strip(),)

    @property
    def signing_key(self) -> str:
        """The key that signs new links."""
        return self.signing_keys[0]


def load_settings() -> Settings:
    return Settings()
