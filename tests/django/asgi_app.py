"""The test project as an ASGI application, for uvicorn (settings: ``asgi_settings``)."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.django.asgi_settings")

application = get_asgi_application()
