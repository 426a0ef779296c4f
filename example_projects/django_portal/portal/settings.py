"""Settings of the Django example portal.

The defaults run it on this machine against the Watcher emulator; the environment changes
what differs elsewhere:

- ``WATCHER_URL``: the Watcher server (default ``http://127.0.0.1:8080``, where
  ``python -m watcher_auth.testing.emulator`` listens by default).
- ``PORTAL_DATABASE``: the SQLite file (default ``db.sqlite3`` beside ``manage.py``).
- ``PORTAL_SECRET_KEY``: Django's secret key. The Watcher tokens are encrypted with a key
  derived from it, so a real deployment sets its own (or ``WATCHER_AUTH["ENCRYPTION_KEYS"]``).
- ``PORTAL_DEBUG``: ``0`` turns debug mode off.
- ``WATCHER_SYSTEM_API_KEY``: Watcher's API v2 system key, read by django_watcher_auth for
  ``request.watcher_system``. With it, staff see every camera on "All cameras (system key)";
  without it that page does not exist.
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("PORTAL_SECRET_KEY", "django-insecure-example-portal-only")
DEBUG = os.environ.get("PORTAL_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_watcher_auth",
    "portal",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # After AuthenticationMiddleware: request.watcher belongs to request.user.
    "django_watcher_auth.middleware.WatcherMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # Project templates come first, so templates/django_watcher_auth/base.html puts the
        # app's connect and status pages inside the portal's layout.
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "portal.context_processors.watcher_panel",
                "portal.context_processors.staff_pages",
            ],
        },
    },
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("PORTAL_DATABASE") or BASE_DIR / "db.sqlite3",
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

WATCHER_AUTH = {
    "URL": os.environ.get("WATCHER_URL") or "http://127.0.0.1:8080",
    # Tokens live in the django_watcher_auth table, encrypted with a key derived from
    # SECRET_KEY (set "ENCRYPTION_KEYS" to use keys of your own).
    "STORE": "db",
}

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "cameras"
LOGOUT_REDIRECT_URL = "login"

#: Cameras per page; small, so the demo's five cameras span two pages.
PORTAL_CAMERAS_PER_PAGE = 4

LANGUAGE_CODE = "en"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
