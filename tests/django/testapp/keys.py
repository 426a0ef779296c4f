"""A portal that keys Watcher tokens by username instead of primary key."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model


def by_username(user: Any) -> str:
    return f"name:{user.get_username()}"


def from_username(key: str) -> Any:
    if not key.startswith("name:"):
        return None
    return get_user_model().objects.filter(username=key.removeprefix("name:")).first()


def raw_username(user: Any) -> str:
    """The username itself as the key: a portal may pick any string."""
    return str(user.get_username())


def from_raw_username(key: str) -> Any:
    return get_user_model().objects.filter(username=key).first()
