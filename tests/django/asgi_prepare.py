"""Prepare the database of the uvicorn-served test project: ``python -m tests.django.asgi_prepare``.

Reads a JSON list of ``[portal username, Watcher username, Watcher password]`` on standard
input; migrates, creates each portal user, connects their Watcher account, and prints a JSON
object of portal username -> session cookie value.
"""

from __future__ import annotations

import json
import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.django.asgi_settings")
    import django

    django.setup()
    from django.contrib.auth import (
        BACKEND_SESSION_KEY,
        HASH_SESSION_KEY,
        SESSION_KEY,
        get_user_model,
    )
    from django.contrib.sessions.backends.db import SessionStore
    from django.core.management import call_command

    from django_watcher_auth.conf import get_manager, user_key

    call_command("migrate", verbosity=0)
    sessions: dict[str, str] = {}
    for portal_name, username, password in json.load(sys.stdin):
        user = get_user_model().objects.create_user(username=portal_name, password="portal-pw")
        get_manager().login(user_key(user), username=username, password=password)
        session = SessionStore()
        session[SESSION_KEY] = str(user.pk)
        session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        session.create()
        assert session.session_key is not None
        sessions[portal_name] = session.session_key
    json.dump(sessions, sys.stdout)


if __name__ == "__main__":
    main()
