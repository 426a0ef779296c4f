"""``manage.py prepare_demo``: create the tables and the demo portal user, a staff member."""

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = "Apply migrations and create (or reset) the demo portal user, a staff member."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="demo")
        parser.add_argument("--password", default="demo-portal-pw")

    def handle(self, *args: Any, **options: Any) -> None:
        call_command("migrate", interactive=False, verbosity=max(0, options["verbosity"] - 1))
        user, created = get_user_model()._default_manager.get_or_create(
            username=options["username"]
        )
        user.set_password(options["password"])
        user.is_staff = True  # staff see every camera on "All cameras (system key)"
        user.save()
        action = "Created" if created else "Reset the password of"
        self.stdout.write(f"{action} the portal user {user.get_username()!r}.")
