"""Tables (one per module), the engine and the unit of work. Named `db` so `models` means CNNs."""

from app.db.api_key import ApiKey
from app.db.bib_read import BibRead
from app.db.base import Base, new_id, utcnow
from app.db.delivery import DeliveredPhoto, Delivery
from app.db.event import Event
from app.db.face import Face
from app.db.heartbeat import WorkerHeartbeat
from app.db.match import Match, MatchRejection, MatchSource
from app.db.organisation import Organisation
from app.db.photo import Photo, PhotoStatus
from app.db.runner import Runner
from app.db.user import User
from app.db.webhook import WebhookDelivery, WebhookEndpoint, WebhookEvent, WebhookEventStatus

__all__ = [
    "ApiKey", "Base", "BibRead", "DeliveredPhoto", "Delivery", "Event", "Face", "Match", "MatchRejection",
    "MatchSource", "Organisation", "Photo", "PhotoStatus", "Runner", "User", "WebhookDelivery", "WebhookEndpoint",
    "WebhookEvent", "WebhookEventStatus", "WorkerHeartbeat", "new_id", "utcnow",
]
