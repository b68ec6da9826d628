"""Alembic migrations; applied by `finishline migrate` and at the start of `finishline run`."""
