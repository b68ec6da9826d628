"""Who is calling: the typed subject every route and service filters by (app/services/access.py).

Built in one place per kind of caller: `require_caller` (app/api/deps.py) from a Bearer key,
`Caller.for_user` from a signed-in dashboard user.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from app.db import ApiKey, User

Scope = Literal["organiser", "partner"]
SCOPES: tuple[Scope, ...] = ("organiser", "partner")


@dataclass(frozen=True)
class Caller:
    organisation_id: str
    scope: Scope
    event_ids: frozenset[str]  # partner: the events it may use; empty = every event of the organisation
    key_id: str | None = None  # the API key, when the caller is a key (runners enrolled by a partner record it)
    user_id: str | None = None  # the dashboard user, when the caller is a signed-in person

    @property
    def is_organiser(self) -> bool:
        return self.scope == "organiser"

    @classmethod
    def for_key(cls, key: ApiKey) -> Caller:
        return cls(organisation_id=key.organisation_id, scope=key.scope,  # type: ignore[arg-type]
                   event_ids=frozenset(key.event_ids or ()), key_id=key.id)

    @classmethod
    def for_user(cls, user: User) -> Caller:
        return cls(organisation_id=user.organisation_id, scope="organiser", event_ids=frozenset(), user_id=user.id)
