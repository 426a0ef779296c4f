"""Unix timestamps as the datetimes Django stores and shows."""

from __future__ import annotations

from datetime import datetime, timezone

from django.conf import settings
from django.utils import timezone as django_timezone

__all__ = ["as_datetime"]


def as_datetime(timestamp: float | None) -> datetime | None:
    """Aware UTC with ``USE_TZ``, naive local time without, ``None`` for ``None``."""
    if timestamp is None:
        return None
    moment = datetime.fromtimestamp(timestamp, tz=timezone.utc)
    return moment if settings.USE_TZ else django_timezone.make_naive(moment)
