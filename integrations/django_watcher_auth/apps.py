"""The app's configuration."""

from __future__ import annotations

from django.apps import AppConfig
from django.conf import settings
from django.db.models.signals import post_delete
from django.utils.translation import gettext_lazy as _

__all__ = ["WatcherAuthConfig"]


class WatcherAuthConfig(AppConfig):
    """``INSTALLED_APPS += ["django_watcher_auth"]``."""

    name = "django_watcher_auth"
    label = "django_watcher_auth"
    verbose_name = _("Watcher")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the system checks and the settings-reload receiver.
        from django_watcher_auth import checks, conf  # noqa: F401
        from django_watcher_auth.accounts import forget_deleted_user

        # A deleted portal user's tokens go with them, whichever store holds them.
        post_delete.connect(
            forget_deleted_user,
            sender=settings.AUTH_USER_MODEL,
            dispatch_uid="django_watcher_auth.forget_deleted_user",
        )
