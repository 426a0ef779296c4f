#!/usr/bin/env python
"""Django's command-line utility for the example portal."""

import os
import sys


def main() -> None:
    """Run a management command (``runserver``, ``migrate``, ``prepare_demo``...)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
