"""Settings for a ``manage.py`` command run as a process of its own by the workers tests: the
test session's settings, on the PostgreSQL test database, with ``WATCHER_AUTH`` from the
``WATCHER_AUTH_JSON`` environment variable."""

from __future__ import annotations

import json
import os

from tests.django.settings import *  # noqa: F403
from tests.django.settings import DATABASES as _DATABASES

_POSTGRES = {**_DATABASES["postgres"], "NAME": _DATABASES["postgres"]["TEST"]["NAME"]}
DATABASES = {"default": _POSTGRES, "postgres": _POSTGRES}
WATCHER_AUTH = json.loads(os.environ["WATCHER_AUTH_JSON"])
