"""``manage.py watcher_disconnect <username>``: forget a portal user's Watcher tokens."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_watcher_auth.accounts import disconnect
from watcher_auth import WatcherAuthError


class Command(BaseCommand):
    help = "Forget the Watcher tokens of a portal user (given by their portal username)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username", help="The portal user's username.")

    def handle(self, *args: Any, **options: Any) -> None:
        model = get_user_model()
        try:
            user = model._default_manager.get_by_natural_key(options["username"])
        except model.DoesNotExist:
            raise CommandError(f"no portal user {options['username']!r}") from None
        try:
            had_tokens = disconnect(user)
        except WatcherAuthError as exc:
            raise CommandError(str(exc)) from exc
        name = user.get_username()
        if had_tokens:
            self.stdout.write(f"Disconnected {name}'s Watcher account.")
        else:
            self.stdout.write(f"{name} had no Watcher account connected.")
