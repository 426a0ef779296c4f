"""The built wheel and sdist install and import on their own, away from this clone.

The wheel goes into a fresh virtualenv with ``--no-deps``; its dependencies come from this
environment's site-packages through a ``.pth`` file, so the check needs nothing from the
network beyond the package registry that ``python -m build`` gets its build backend from.
"""

from __future__ import annotations

import email.parser
import subprocess
import sys
import sysconfig
import tarfile
import tomllib
import venv
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
#: The importable packages the wheel must hold: the last part of each listed path.
PACKAGES = sorted(
    Path(path).name for path in PYPROJECT["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
)


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder with the sdist and the wheel built from it, as ``python -m build`` makes them."""
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(REPO)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    yield out


def only(folder: Path, pattern: str) -> Path:
    (found,) = folder.glob(pattern)
    return found


def test_the_wheel_holds_every_listed_package_and_its_type_marker(dist: Path) -> None:
    with zipfile.ZipFile(only(dist, "*.whl")) as wheel:
        names = wheel.namelist()
        metadata = email.parser.Parser().parsestr(
            wheel.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        )
        entry_points = wheel.read(
            next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        ).decode()

    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith("-info")}
    assert (
        sorted(top_level)
        == PACKAGES
        == [
            "django_watcher_auth",
            "fastapi_watcher_auth",
            "flask_watcher_auth",
            "watcher_auth",
        ]
    )
    assert "watcher_auth/py.typed" in names
    # The tests, the examples and the integrations/ folder itself stay out of the wheel.
    assert not [n for n in names if n.startswith(("tests/", "example_projects/", "integrations/"))]
    assert metadata["Requires-Python"] == PYPROJECT["project"]["requires-python"]
    assert set(metadata.get_all("Provides-Extra") or []) >= {"django", "fastapi", "flask", "test"}
    assert "watcher_auth.testing.pytest_plugin" in entry_points


def test_the_sdist_holds_the_sources_the_tests_and_the_readme(dist: Path) -> None:
    with tarfile.open(only(dist, "*.tar.gz")) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}

    for needed in (
        "pyproject.toml",
        "README.md",
        "watcher_auth/__init__.py",
        "integrations/django_watcher_auth/__init__.py",
        "integrations/flask_watcher_auth/__init__.py",
        "integrations/fastapi_watcher_auth/__init__.py",
        "tests/conformance/schemas/login.json",
    ):
        assert needed in names, needed


def test_the_wheel_installs_into_a_fresh_virtualenv_and_every_package_imports(
    dist: Path, tmp_path: Path
) -> None:
    env_dir = tmp_path / "fresh"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-index", str(only(dist, "*.whl"))],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    # The dependencies (requests, PyJWT, Django, Flask...) from this environment, after the
    # fresh environment's own site-packages, so the wheel's packages come first.
    fresh_site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(fresh_site) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    script = (
        "import importlib, sys\n"
        f"for name in {PACKAGES!r} + ['watcher_auth.testing.emulator', 'watcher_auth.v2']:\n"
        "    module = importlib.import_module(name)\n"
        "    print(name, module.__file__)\n"
    )
    imported = subprocess.run(
        [str(python), "-I", "-c", script],
        cwd=tmp_path,  # not the clone: its folders must not be what gets imported
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert imported.returncode == 0, imported.stderr
    where = dict(line.split(" ", 1) for line in imported.stdout.splitlines())
    assert set(where) >= set(PACKAGES)
    for name, path in where.items():
        assert path.startswith(fresh_site), (name, path)
