"""Celery app and tasks: the background half of Finishline."""
