"""Keyset pagination for every list that can grow: an opaque cursor holds the last row's sort key.

A cursor is base64url(JSON list of the sort values of the last item). The next page starts
strictly after it in the list's order, so rows added or removed meanwhile never shift a page.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, and_, or_

from app.db.session import UnitOfWork
from app.errors import Unprocessable

T = TypeVar("T")
# (column, descending?) in sort order; the last column must be unique (an id)
Order = Sequence[tuple[Any, bool]]


def encode_cursor(values: Sequence[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(values), separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, size: int) -> list[Any]:
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        values = None
    if not isinstance(values, list) or len(values) != size or not all(
            isinstance(v, (str, int, float)) for v in values):
        raise Unprocessable("This cursor is not one we gave out; start again without it.", code="invalid_cursor")
    return values


def _after(order: Order, values: list[Any]) -> ColumnElement[bool]:
    """Rows strictly after `values` in `order`: (a > x) or (a = x and b > y) or ..."""
    terms = []
    for i, (column, descending) in enumerate(order):
        equal = [col == value for (col, _), value in zip(order[:i], values[:i])]
        beyond = column < values[i] if descending else column > values[i]
        terms.append(and_(*equal, beyond))
    return or_(*terms)


def keyset_page(uow: UnitOfWork, query: Select, order: Order, *, limit: int, cursor: str | None,
                sort_key: Callable[[Any], Sequence[Any]]) -> tuple[list[Any], str | None]:
    """One page of `query` (which selects one entity) and the cursor of the next, or None at the end."""
    if cursor:
        query = query.where(_after(order, decode_cursor(cursor, len(order))))
    query = query.order_by(*(col.desc() if desc else col.asc() for col, desc in order)).limit(limit + 1)
    rows = list(uow.session.scalars(query))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, encode_cursor(sort_key(rows[-1])) if more else None
