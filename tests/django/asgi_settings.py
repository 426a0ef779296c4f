"""Settings for the test project served by uvicorn in a subprocess (``tests.django.asgi_app``).

The database and ``WATCHER_AUTH`` come from the environment: ``PORTAL_DATABASES`` (JSON of
``DATABASES``) and ``PORTAL_WATCHER_AUTH`` (JSON of ``WATCHER_AUTH``).
"""

from __future__ import annotations

import json
import os

from tests.django.settings import *  # noqa: F403

DATABASES = json.loads(os.environ["PORTAL_DATABASES"])
WATCHER_AUTH = json.loads(os.environ["PORTAL_WATCHER_AUTH"])
