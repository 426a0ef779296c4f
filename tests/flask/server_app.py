"""The Flask test portal for a server in a subprocess: ``create_app()`` reads ``WATCHER_URL``
from the environment and runs on the real clock."""

from __future__ import annotations

import os
import time

from flask import Flask

from tests.flask.conftest import build_portal


def create_app() -> Flask:
    return build_portal(os.environ["WATCHER_URL"], time.time)  # type: ignore[arg-type]
