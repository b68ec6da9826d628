"""Organisations: creation and lookup by slug (the CLI's `--org`)."""

from __future__ import annotations

from sqlalchemy import select

from app.db import Organisation
from app.db.session import UnitOfWork
from app.errors import NotFound
from app.services.events import slugify


def create_organisation(uow: UnitOfWork, *, name: str) -> Organisation:
    organisation = Organisation(name=name, slug=slugify(name))
    uow.session.add(organisation)
    uow.session.flush()
    return organisation


def get_by_slug(uow: UnitOfWork, slug: str) -> Organisation:
    organisation = uow.session.scalar(select(Organisation).where(Organisation.slug == slug))
    if organisation is None:
        raise NotFound(f"No organisation {slug!r}.", code="organisation_not_found")
    return organisation


def slugs_by_id(uow: UnitOfWork) -> dict[str, str]:
    return dict(uow.session.execute(select(Organisation.id, Organisation.slug)).all())
