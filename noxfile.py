"""The test matrix: every supported Python with every supported Django.

``make matrix`` runs every cell (``nox -s tests``): the Django, core and API v2 suites in a
fresh virtualenv per cell. ``make test`` runs the two corners (``nox -t corners``), the oldest
and the newest pair, with the Django suite only. One cell by name::

    nox -s "tests(python='3.13', django='6.1')"
    nox -s "tests(python='3.12', django='6.0')" -- tests/django/test_flow.py

An interpreter this machine does not have skips its cells with the reason, except when the
``CI`` environment variable is set: there a missing interpreter fails the run, so a
half-tested matrix never passes as a whole one.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib

import nox

nox.options.default_venv_backend = "venv"
# Each cell's virtualenv is kept between runs; `session.install` brings it up to date.
nox.options.reuse_venv = "yes"
# The interpreters are found here (see `interpreter`); nox must never fetch one.
nox.options.download_python = "never"
nox.options.sessions = ["tests"]

PYTHONS = ("3.11", "3.12", "3.13")
DJANGOS = ("5.2", "6.0", "6.1")
SUITES = ("tests/django", "tests/core", "tests/v2")
CORNERS = {("3.11", "5.2"), ("3.13", "6.1")}
# What these suites need from the test extra; linters, stubs and the browser stay out of the
# cells, which keeps a fresh cell's install short. uvicorn serves the ASGI tests; the
# OpenTelemetry SDK reads back what the status and telemetry tests record.
RUNNERS = ("pytest", "pytest-django", "hypothesis", "uvicorn", "opentelemetry-sdk", "jsonschema")


def _test_requirements() -> list[str]:
    """The test extra's requirements for ``RUNNERS``, with their version bounds."""
    with open("pyproject.toml", "rb") as file:
        extra = tomllib.load(file)["project"]["optional-dependencies"]["test"]
    return [
        requirement
        for requirement in extra
        if re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower() in RUNNERS
    ]


def _default_cell() -> tuple[str, str] | None:
    """The (Python, Django) pair of the virtualenv nox runs from: ``make test`` has run the
    whole suite there already, so a corner equal to it is not run twice."""
    try:
        django = importlib.metadata.version("django")
    except importlib.metadata.PackageNotFoundError:
        return None
    return f"{sys.version_info[0]}.{sys.version_info[1]}", ".".join(django.split(".")[:2])


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) if part.isdigit() else -1 for part in name.split("."))


def interpreter(version: str) -> str | None:
    """The newest installed Python ``version`` (``"3.12"``), or ``None`` when there is none.

    pyenv's shims answer only for the global version, so each installed one is looked up
    with ``pyenv prefix``; without pyenv, ``python3.X`` on ``PATH`` is used.
    """
    pyenv = shutil.which("pyenv")
    if pyenv is not None:
        listed = subprocess.run(
            [pyenv, "versions", "--bare"], capture_output=True, text=True, check=False
        ).stdout.split()
        matching = [name for name in listed if name.startswith(version + ".")]
        for name in sorted(matching, key=_version_key, reverse=True):
            prefix = subprocess.run(
                [pyenv, "prefix", name], capture_output=True, text=True, check=False
            ).stdout.strip()
            path = os.path.join(prefix, "bin", "python")
            if prefix and os.access(path, os.X_OK):
                return path
    found = shutil.which(f"python{version}")
    # A pyenv shim for a version that is not the global one only prints an error.
    return found if found is not None and "/shims/" not in found else None


def _cells() -> list[nox.param]:
    cells = []
    for python in PYTHONS:
        for django in DJANGOS:
            # Django 6 requires Python 3.12 or newer.
            if python == "3.11" and django != "5.2":
                continue
            cells.append(
                nox.param(
                    # False (no virtualenv) lets the session say why it cannot run.
                    interpreter(python) or False,
                    python,
                    django,
                    id=f"python='{python}', django='{django}'",
                    tags=["corners"]
                    if (python, django) in CORNERS and (python, django) != _default_cell()
                    else [],
                )
            )
    return cells


@nox.session
@nox.parametrize(("python", "version", "django"), _cells())
def tests(session: nox.Session, version: str, django: str) -> None:
    """The Django, core and API v2 suites (or the paths given after ``--``) on one cell."""
    if session.python is False:
        reason = (
            f"Python {version} is not installed here (no `pyenv prefix {version}.x`, "
            f"no python{version} on PATH)"
        )
        if os.environ.get("CI"):
            session.error(f"{reason}; CI is set, so a matrix cell never skips")
        session.skip(reason)
    session.install("-e", ".[all]", *_test_requirements(), f"Django=={django}.*")
    session.run(
        "python",
        "-c",
        "import sys, django; print('Python', sys.version.split()[0], 'Django', django.__version__)",
    )
    suites = session.posargs or SUITES
    session.run("python", "-m", "pytest", *suites, "-q", "-m", "not browser")
