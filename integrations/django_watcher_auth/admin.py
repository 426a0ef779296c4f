"""The admin list of Watcher accounts (tokens are never shown) with a disconnect action."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from django_watcher_auth.accounts import disconnect_key
from django_watcher_auth.conf import get_manager
from django_watcher_auth.models import WatcherAccount

__all__ = ["WatcherAccountAdmin"]


@admin.register(WatcherAccount)
class WatcherAccountAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Read-only rows: who is connected to which Watcher, since when, and their status.

    API v2 accounts (sessions and user API keys) are rows with ``api`` ``"v2"``.
    """

    list_display = (
        "user",
        "username",
        "status",
        "api",
        "server",
        "connected_at",
        "last_refreshed_at",
        "access_expires_at",
    )
    list_filter = ("status", "server", "api")
    search_fields = ("username", "user_key")
    list_select_related = ("user",)
    date_hierarchy = "connected_at"
    # "record" (the encrypted tokens) is left out on purpose.
    fields = (
        "user",
        "user_key",
        "server",
        "api",
        "username",
        "status",
        "connected_at",
        "last_refreshed_at",
        "access_expires_at",
        "updated_at",
    )
    readonly_fields = fields
    actions = ("disconnect",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(
        self, request: HttpRequest, obj: WatcherAccount | None = None
    ) -> bool:
        return False

    @admin.action(description=_("Disconnect the selected Watcher accounts"), permissions=["delete"])
    def disconnect(self, request: HttpRequest, queryset: QuerySet[WatcherAccount]) -> None:
        """Forget the tokens of the selected accounts and remove their rows."""
        manager = get_manager()
        count = 0
        for account in queryset:
            if account.server == manager.server and account.api in ("v3", "v2"):
                disconnect_key(account.user_key, api=account.api)
            else:
                account.delete()
            count += 1
        self.message_user(
            request,
            ngettext(
                "Disconnected %(count)d Watcher account.",
                "Disconnected %(count)d Watcher accounts.",
                count,
            )
            % {"count": count},
            messages.SUCCESS,
        )
