"""The database table of the ``"db"`` store: one row per portal user and Watcher server."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

__all__ = ["WatcherAccount"]


class WatcherAccount(models.Model):
    """A portal user's Watcher account on one Watcher server.

    The tokens are in :attr:`record`, encrypted; the other columns are plain facts for the
    admin and the status pages. After Watcher rejects the tokens the row stays, with an empty
    record and the status "needs re-login", until the person connects again or disconnects.
    """

    class Status(models.TextChoices):
        CONNECTED = "connected", _("connected")
        NEEDS_RELOGIN = "needs_relogin", _("needs re-login")

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="watcher_accounts",
        verbose_name=_("portal user"),
        help_text=_("Empty for a service account."),
    )
    user_key = models.CharField(_("user key"), max_length=255)
    server = models.CharField(_("Watcher server"), max_length=255)
    api = models.CharField(_("API"), max_length=8, default="v3")
    username = models.CharField(_("Watcher username"), max_length=255, blank=True)
    status = models.CharField(
        _("status"), max_length=16, choices=Status.choices, default=Status.NEEDS_RELOGIN
    )
    record = models.TextField(_("encrypted tokens"), blank=True, default="", editable=False)
    connected_at = models.DateTimeField(_("connected at"), null=True, blank=True)
    last_refreshed_at = models.DateTimeField(_("last refreshed at"), null=True, blank=True)
    access_expires_at = models.DateTimeField(_("access token expires at"), null=True, blank=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("Watcher account")
        verbose_name_plural = _("Watcher accounts")
        ordering = ["server", "user_key"]
        constraints = [
            models.UniqueConstraint(
                fields=["user_key", "server", "api"], name="django_watcher_auth_one_per_key"
            ),
            models.UniqueConstraint(
                fields=["user", "server", "api"], name="django_watcher_auth_one_per_user"
            ),
        ]

    def __str__(self) -> str:
        who = self.username or "?"
        return f"{who} on {self.server} ({self.get_status_display()})"
