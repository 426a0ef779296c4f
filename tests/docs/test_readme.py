"""Every code block of the README does what the README says, against the emulator."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import inspect
import os
import re
import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from flask_login import UserMixin

from flask_watcher_auth import get_state
from watcher_auth import ReauthenticationRequired, TokenManager
from watcher_auth.testing import FakeClock, WatcherEmulator
from watcher_auth.testing.pytest_plugin import EmulatorFactory

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"

Block = Callable[..., str]

# Each named python block and the test below that runs it.
RUNNERS = {
    "core": "test_the_core_quick_start_lists_the_streams",
    "core-errors": "test_the_connect_form_example_tells_a_wrong_password_apart",
    "core-service-account": "test_a_service_account_logs_in_by_itself",
    "core-async": "test_the_async_quick_start_lists_the_streams",
    "django-settings": "test_the_django_quick_start_connects_and_lists_the_cameras",
    "django-urls": "test_the_django_quick_start_connects_and_lists_the_cameras",
    "django-views": "test_the_django_quick_start_connects_and_lists_the_cameras",
    "flask": "test_the_flask_quick_start_connects_and_lists_the_cameras",
    "django-async": "test_the_django_async_view_lists_the_camera_names",
    "flask-async": "test_the_flask_async_view_lists_the_camera_names",
    "fastapi": "test_the_fastapi_quick_start_connects_and_lists_the_cameras",
    "v2": "test_the_api_v2_example_logs_in_and_lists_cameras",
    "django-v2": "test_the_django_v2_view_asks_for_an_api_v2_account_then_lists_cameras",
    "flask-v2": "test_the_flask_v2_view_asks_for_an_api_v2_account_then_lists_cameras",
    "testing": "test_the_emulator_test_examples_pass",
    "remote-emulator": "test_the_remote_emulator_example_revokes_sessions",
    "contract": "test_the_store_contract_example_runs_under_pytest",
}


def test_every_python_block_is_named_and_run(readme: list[Any]) -> None:
    python = [block for block in readme if block.lang == "python"]
    unnamed = [block.line for block in python if block.name is None]
    assert unnamed == [], f"README python blocks without a readme-test name, at lines {unnamed}"
    assert sorted(block.name for block in python) == sorted(RUNNERS)
    module = sys.modules[__name__]
    assert all(callable(getattr(module, test, None)) for test in RUNNERS.values())


def test_every_block_has_a_known_language(readme: list[Any]) -> None:
    assert {block.lang for block in readme} <= {"python", "sh", "text", "mermaid"}


def test_the_configuration_tables_list_every_setting_with_its_default() -> None:
    from django_watcher_auth.conf import DEFAULTS
    from fastapi_watcher_auth import DEFAULTS as FASTAPI_DEFAULTS
    from flask_watcher_auth import CONFIG_DEFAULTS

    core = {
        name: parameter.default
        for name, parameter in inspect.signature(TokenManager).parameters.items()
    }
    for title, defaults in (
        ("`TokenManager` (the core)", core),
        ("Django: `WATCHER_AUTH`", dict(DEFAULTS)),
        ("Flask: `WATCHER_*`", dict(CONFIG_DEFAULTS)),
        ("FastAPI: `WATCHER_*`", dict(FASTAPI_DEFAULTS)),
    ):
        documented = _settings_table(title)
        assert set(documented) == set(defaults), title
        for key, cell in documented.items():
            literal = re.fullmatch(r"`([^`]+)`(?: \(required\))?", cell)
            if literal is None:
                continue  # described in words ("a new `MemoryStore`")
            try:
                value = ast.literal_eval(literal[1])
            except ValueError:
                continue  # a name such as `time.time`
            assert value == defaults[key], (title, key)


def _settings_table(title: str) -> dict[str, str]:
    """``{key: default cell}`` of the table under the README heading ``### <title>``."""
    section = README.read_text().split(f"### {title}\n", 1)[1].split("\n#", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| (.+?) \|", section, re.MULTILINE)
    return dict(rows)


# --- the core ---------------------------------------------------------------------------


def test_the_core_quick_start_lists_the_streams(
    readme_block: Block, watcher_emulator: WatcherEmulator, capsys: pytest.CaptureFixture[str]
) -> None:
    namespace: dict[str, Any] = {}
    exec(readme_block("core", watcher_emulator.url), namespace)
    assert capsys.readouterr().out.splitlines() == [
        "alice-cam-0 True",
        "alice-cam-1 True",
        "alice-cam-2 True",
    ]
    assert [s["name"] for s in namespace["streams"]["streams"]] == [
        "alice-cam-0",
        "alice-cam-1",
        "alice-cam-2",
    ]
    assert watcher_emulator.stats.password_logins == 1
    assert not namespace["manager"].is_connected("portal-user-42")


def test_the_async_quick_start_lists_the_streams(
    readme_block: Block, watcher_emulator: WatcherEmulator, capsys: pytest.CaptureFixture[str]
) -> None:
    exec(readme_block("core-async", watcher_emulator.url), {})
    assert capsys.readouterr().out.splitlines() == [
        "alice ['alice-cam-0', 'alice-cam-1', 'alice-cam-2']",
        "someone-else has to connect first",
    ]
    stats = watcher_emulator.stats
    assert (stats.password_logins, stats.calls_by_user) == (1, {"alice": 2})


def test_the_connect_form_example_tells_a_wrong_password_apart(
    readme_block: Block, watcher_emulator: WatcherEmulator
) -> None:
    namespace: dict[str, Any] = {"manager": TokenManager(watcher_emulator.url)}
    exec(readme_block("core-errors"), namespace)
    assert namespace["message"] == "Watcher did not accept this username and password."
    assert not namespace["manager"].is_connected("portal-user-42")

    watcher_emulator.fail_next("login", mode="503")
    exec(readme_block("core-errors"), namespace)
    assert namespace["message"] == "Watcher cannot be reached right now. Try again in a minute."
    stats = watcher_emulator.stats
    assert (stats.failed_logins, stats.password_logins) == (1, 0)


def test_a_service_account_logs_in_by_itself(
    readme_block: Block, watcher_emulator: WatcherEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHER_SERVICE_USERNAME", "bob")
    monkeypatch.setenv("WATCHER_SERVICE_PASSWORD", "hunter2")
    namespace: dict[str, Any] = {"TokenManager": TokenManager}
    exec(readme_block("core-service-account", watcher_emulator.url), namespace)
    assert namespace["profile"]["name"] == "bob"
    namespace["service"].session("reports").json("profile")
    assert watcher_emulator.stats.password_logins == 1


def test_the_api_v2_example_logs_in_and_lists_cameras(
    readme_block: Block, watcher_emulator: WatcherEmulator, capsys: pytest.CaptureFixture[str]
) -> None:
    manager = TokenManager(watcher_emulator.url)
    namespace: dict[str, Any] = {"manager": manager}
    exec(readme_block("v2"), namespace)
    assert [camera["name"] for camera in namespace["cameras"]] == [
        "alice-cam-0",
        "alice-cam-1",
        "alice-cam-2",
    ]
    assert capsys.readouterr().out == "alice\n"
    assert watcher_emulator.stats.v2_logins == 1
    assert not manager.v2_is_connected("portal-user-42")


# --- Django -----------------------------------------------------------------------------

CAMERAS_TEMPLATE = "{% for s in streams %}{{ s.name }};{% endfor %}"


@pytest.mark.django_db
def test_the_django_quick_start_connects_and_lists_the_cameras(
    readme_block: Block,
    watcher_emulator: WatcherEmulator,
    settings: Any,
    client: Any,
    django_user_model: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The settings block extends a project's lists; start from these settings without the app.
    project: dict[str, Any] = {
        "INSTALLED_APPS": [a for a in settings.INSTALLED_APPS if a != "django_watcher_auth"],
        "MIDDLEWARE": [m for m in settings.MIDDLEWARE if not m.startswith("django_watcher")],
    }
    exec(readme_block("django-settings", watcher_emulator.url), project)
    assert "django_watcher_auth" in project["INSTALLED_APPS"]
    settings.MIDDLEWARE = project["MIDDLEWARE"]
    settings.WATCHER_AUTH = project["WATCHER_AUTH"]
    settings.TEMPLATES = [
        {
            "BACKEND": "django.template.backends.django.DjangoTemplates",
            "OPTIONS": {
                "loaders": [
                    ("django.template.loaders.locmem.Loader", {"cameras.html": CAMERAS_TEMPLATE}),
                    "django.template.loaders.app_directories.Loader",
                ],
                "context_processors": ["django.contrib.messages.context_processors.messages"],
            },
        }
    ]
    views = types.ModuleType("myportal.views")
    exec(readme_block("django-views"), views.__dict__)
    package = types.ModuleType("myportal")
    package.views = views  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "myportal", package)
    monkeypatch.setitem(sys.modules, "myportal.views", views)
    urls = types.ModuleType("readme_urls")
    exec(readme_block("django-urls"), urls.__dict__)
    monkeypatch.setitem(sys.modules, "readme_urls", urls)
    settings.ROOT_URLCONF = "readme_urls"

    client.force_login(django_user_model.objects.create_user("portal-user", password="pw"))
    first = client.get("/cameras/")
    assert (first.status_code, first["Location"]) == (302, "/watcher/connect/?next=%2Fcameras%2F")
    form = {"username": "alice", "password": "secret", "next": "/cameras/"}
    connected = client.post("/watcher/connect/", form)
    assert (connected.status_code, connected["Location"]) == (302, "/cameras/")
    page = client.get("/cameras/")
    assert page.content.decode() == "alice-cam-0;alice-cam-1;alice-cam-2;"
    assert watcher_emulator.stats.password_logins == 1


@pytest.mark.django_db
def test_the_django_v2_view_asks_for_an_api_v2_account_then_lists_cameras(
    readme_block: Block,
    watcher_emulator: WatcherEmulator,
    settings: Any,
    client: Any,
    django_user_model: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from django.urls import include, path

    from django_watcher_auth.conf import get_manager, user_key

    settings.WATCHER_AUTH = {"URL": watcher_emulator.url, "STORE": "db"}
    views = types.ModuleType("readme_v2_views")
    exec(readme_block("django-v2"), views.__dict__)
    urls = types.ModuleType("readme_v2_urls")
    urls.urlpatterns = [  # type: ignore[attr-defined]
        path("watcher/", include("django_watcher_auth.urls")),
        path("my-cameras/", views.my_cameras),
    ]
    monkeypatch.setitem(sys.modules, "readme_v2_urls", urls)
    settings.ROOT_URLCONF = "readme_v2_urls"
    user = django_user_model.objects.create_user("portal-user", password="pw")
    client.force_login(user)

    first = client.get("/my-cameras/")
    assert first.status_code == 302
    assert first["Location"].startswith("/watcher/connect/v2/")
    get_manager().v2_login(user_key(user), username="alice", password="secret")
    cameras = client.get("/my-cameras/").json()["cameras"]
    assert cameras == ["alice-cam-0", "alice-cam-1", "alice-cam-2"]
    assert watcher_emulator.stats.v2_logins == 1


@pytest.mark.django_db(transaction=True)
def test_the_django_async_view_lists_the_camera_names(
    readme_block: Block,
    watcher_emulator: WatcherEmulator,
    settings: Any,
    django_user_model: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from asgiref.sync import async_to_sync
    from django.test import AsyncClient
    from django.urls import path

    from django_watcher_auth.conf import get_manager, user_key

    settings.WATCHER_AUTH = {"URL": watcher_emulator.url, "STORE": "db"}
    views = types.ModuleType("readme_async_views")
    exec(readme_block("django-async"), views.__dict__)
    urls = types.ModuleType("readme_async_urls")
    urls.urlpatterns = [path("names/", views.camera_names)]  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "readme_async_urls", urls)
    settings.ROOT_URLCONF = "readme_async_urls"
    user = django_user_model.objects.create_user("portal-user", password="pw")
    get_manager().login(user_key(user), username="alice", password="secret")

    async def visit() -> Any:
        client = AsyncClient()
        await client.aforce_login(user)
        return await client.get("/names/")

    answer = async_to_sync(visit)()
    assert answer.json() == {"names": ["alice-cam-0", "alice-cam-1", "alice-cam-2"]}


def test_the_django_management_commands_exist(readme: list[Any]) -> None:
    from django.core.management import get_commands

    named = set(re.findall(r"python manage\.py (\w+)", _shell(readme)))
    portal_commands = {"prepare_demo", "runserver"}  # the example portal's, checked below
    assert named - portal_commands <= set(get_commands())
    assert {"watcher_check", "watcher_status", "watcher_disconnect"} <= named


# --- Flask ------------------------------------------------------------------------------


class PortalUser(UserMixin):
    def __init__(self, user_id: str) -> None:
        self.id = user_id


def test_the_flask_quick_start_connects_and_lists_the_cameras(
    readme_block: Block,
    watcher_emulator: WatcherEmulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.chdir(tmp_path)  # the block's SQLite file goes here
    monkeypatch.setenv("PORTAL_SECRET_KEY", "readme test secret")
    namespace: dict[str, Any] = {"__name__": "readme_portal"}
    exec(readme_block("flask", watcher_emulator.url), namespace)
    app = namespace["app"]
    # The portal's own sign-in, which the block leaves to the reader.
    namespace["login_manager"].user_loader(lambda user_id: PortalUser(user_id))
    client = app.test_client()
    with client.session_transaction() as session:
        session["_user_id"] = "7"

    first = client.get("/cameras")
    assert (first.status_code, first.location) == (302, "/watcher/connect?next=/cameras")
    form_page = client.get(first.location).get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form_page)
    assert csrf is not None
    form = {"username": "alice", "password": "secret", "next": "/cameras", "csrf_token": csrf[1]}
    connected = client.post("/watcher/connect", data=form)
    assert (connected.status_code, connected.location) == (302, "/cameras")
    page = client.get("/cameras").get_data(as_text=True)
    assert page == "<p>Camera 0</p><p>Camera 1</p><p>Camera 2</p>"
    assert watcher_emulator.stats.password_logins == 1
    assert (tmp_path / "watcher-tokens.db").is_file()
    get_state(app).store.close()


def test_the_flask_async_view_lists_the_camera_names(
    readme_block: Block,
    watcher_emulator: WatcherEmulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PORTAL_SECRET_KEY", "readme test secret")
    namespace: dict[str, Any] = {"__name__": "readme_portal"}
    exec(readme_block("flask", watcher_emulator.url), namespace)
    exec(readme_block("flask-async"), namespace)
    app = namespace["app"]
    namespace["login_manager"].user_loader(lambda user_id: PortalUser(user_id))
    get_state(app).manager.login("7", username="alice", password="secret")
    client = app.test_client()
    with client.session_transaction() as session:
        session["_user_id"] = "7"

    answer = client.get("/camera-names")
    assert answer.json == {"names": ["alice-cam-0", "alice-cam-1", "alice-cam-2"]}
    get_state(app).store.close()


# --- FastAPI ----------------------------------------------------------------------------


def test_the_fastapi_quick_start_connects_and_lists_the_cameras(
    readme_block: Block, watcher_emulator: WatcherEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio
    import uuid

    import httpx

    from watcher_auth.crypto import generate_key
    from watcher_auth.testing.services import require_redis

    monkeypatch.setenv("REDIS_URL", require_redis(11))
    monkeypatch.setenv("WATCHER_TOKEN_KEY", generate_key())
    code = readme_block("fastapi", watcher_emulator.url).replace(
        '"WATCHER_STORE": "redis",',
        f'"WATCHER_STORE": "redis", "WATCHER_STORE_OPTIONS": {{"prefix": "{uuid.uuid4().hex}:"}},',
    )
    namespace: dict[str, Any] = {"__name__": "readme_service"}
    exec(code, namespace)
    app, watcher_auth = namespace["app"], namespace["watcher_auth"]
    user = {"X-Portal-User": "7"}

    async def visit() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with (
            watcher_auth.lifespan(app),
            httpx.AsyncClient(transport=transport, base_url="http://service") as client,
        ):
            before = await client.get("/cameras", headers=user)
            body = {"username": "alice", "password": "secret"}
            connected = await client.post("/watcher/connect", json=body, headers=user)
            return [before, connected, await client.get("/cameras", headers=user)]

    before, connected, after = asyncio.run(visit())
    assert (before.status_code, before.json()["connect_url"]) == (401, "/watcher/connect")
    assert connected.json() == {"connected": True, "username": "alice"}
    assert after.json() == ["alice-cam-0", "alice-cam-1", "alice-cam-2"]
    assert watcher_emulator.stats.password_logins == 1


def test_the_flask_v2_view_asks_for_an_api_v2_account_then_lists_cameras(
    readme_block: Block,
    watcher_emulator: WatcherEmulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PORTAL_SECRET_KEY", "readme test secret")
    namespace: dict[str, Any] = {"__name__": "readme_portal"}
    exec(readme_block("flask", watcher_emulator.url), namespace)
    exec(readme_block("flask-v2"), namespace)
    app = namespace["app"]
    namespace["login_manager"].user_loader(lambda user_id: PortalUser(user_id))
    client = app.test_client()
    with client.session_transaction() as session:
        session["_user_id"] = "7"

    first = client.get("/my-cameras")
    assert first.status_code == 302
    assert first.location.startswith("/watcher/connect/v2")
    get_state(app).manager.v2_login("7", username="alice", password="secret")
    cameras = client.get("/my-cameras").get_json()["cameras"]
    assert cameras == ["alice-cam-0", "alice-cam-1", "alice-cam-2"]
    assert watcher_emulator.stats.v2_logins == 1
    get_state(app).store.close()


# --- testing with the emulator ----------------------------------------------------------


def test_the_emulator_test_examples_pass(
    readme_block: Block, watcher_emulator_factory: EmulatorFactory
) -> None:
    namespace: dict[str, Any] = {}
    exec(readme_block("testing"), namespace)
    tests = {name: f for name, f in namespace.items() if name.startswith("test_")}
    assert len(tests) == 3
    fixtures: dict[str, Callable[[], Any]] = {
        "watcher_emulator": watcher_emulator_factory,
        "watcher_emulator_factory": lambda: watcher_emulator_factory,
        "fake_clock": FakeClock,
    }
    for test in tests.values():
        test(**{name: fixtures[name]() for name in inspect.signature(test).parameters})


def test_the_remote_emulator_example_revokes_sessions(
    readme_block: Block,
    watcher_emulator: WatcherEmulator,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WATCHER_EMULATOR_CONTROL_TOKEN", watcher_emulator.control_token)
    manager = TokenManager(watcher_emulator.url)
    manager.login("user-1", username="alice", password="secret")
    code = readme_block("remote-emulator").replace("http://127.0.0.1:8080", watcher_emulator.url)
    exec(code, {})
    assert capsys.readouterr().out == "0\n"
    with pytest.raises(ReauthenticationRequired):
        manager.refresh("user-1")


def test_the_emulator_command_lines_serve_their_users(readme: list[Any]) -> None:
    lines = [
        line.split()
        for line in _shell(readme).splitlines()
        if line.startswith("python -m watcher_auth.testing.emulator")
    ]
    assert len(lines) == 2
    for line in lines:
        args = line[3:]
        args[args.index("--port") + 1] = "0"
        users = [args[i + 1].split(":", 1) for i, arg in enumerate(args) if arg == "--user"]
        process = subprocess.Popen(
            [sys.executable, "-m", "watcher_auth.testing.emulator", *args],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert process.stdout is not None
            banner = process.stdout.readline()
            url = re.search(r"listening on (http://\S+)", banner)
            assert url is not None, banner
            for username, password in users:
                answer = requests.post(
                    url[1] + "/watcher/client-api/v3/login", auth=(username, password), timeout=10
                )
                assert answer.status_code == 200, username
                assert set(answer.json()) == {"access_token", "refresh_token"}
        finally:
            process.terminate()
            process.wait(timeout=10)
        assert process.returncode == 0


def test_the_store_contract_example_runs_under_pytest(readme_block: Block, tmp_path: Path) -> None:
    code = readme_block("contract").replace(
        "from myportal.stores import MyStore", "from watcher_auth import MemoryStore as MyStore"
    )
    (tmp_path / "test_my_store.py").write_text(code)
    # A plain project of the reader's: none of this repository's pytest settings.
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:django"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\d+ passed", result.stdout), result.stdout


# --- the shell commands -----------------------------------------------------------------


def test_the_make_targets_in_the_readme_exist(readme: list[Any]) -> None:
    makefile = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([\w-]+):", makefile, re.MULTILINE))
    named = set(re.findall(r"^make ([\w-]+)", _shell(readme), re.MULTILINE))
    named |= set(re.findall(r"`make ([\w-]+)`", README.read_text()))
    assert {"demo", "demo-flask", "demo-fastapi", "test"} <= named <= targets


def test_the_pip_install_lines_name_real_extras_and_packages(readme: list[Any]) -> None:
    extras = set(importlib.metadata.metadata("watcher-auth").get_all("Provides-Extra") or [])
    lines = [line for line in _shell(readme).splitlines() if line.startswith("pip install ")]
    assert len(lines) == 4
    for line in lines:
        for requirement in line.split()[2:]:
            name, _, wanted = requirement.strip('"').partition("[")
            if name == "watcher-auth":
                assert set(wanted.rstrip("]").split(",")) - {""} <= extras, line
            else:
                importlib.metadata.distribution(name)  # installed by the test extra


def test_the_demo_banner_is_the_one_the_readme_shows(
    readme: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    run_demo = _load_run_demo()
    run_demo.print_banner(
        run_demo.PORTALS["django"], "http://127.0.0.1:8000", "http://127.0.0.1:8080", True, 120.0
    )
    banner = next(b.code for b in readme if "is running at" in b.code)
    assert capsys.readouterr().out.strip() == banner.strip()


def test_the_example_layout_in_the_readme_exists(readme: list[Any]) -> None:
    tree = next(b.code for b in readme if b.code.startswith("example_projects/"))
    named = re.findall(r"^  ([\w.]+/?)", tree, re.MULTILINE)
    assert named == ["run_demo.py", "django_portal/", "flask_portal/", "fastapi_service/"]
    for name in named:
        assert (REPO / "example_projects" / name).exists()


def test_the_diagram_is_a_mermaid_sequence(readme: list[Any]) -> None:
    (diagram,) = [block.code for block in readme if block.lang == "mermaid"]
    assert diagram.startswith("sequenceDiagram\n")


def test_the_ci_entry_point_runs_make_test() -> None:
    run = (REPO / ".ci" / "run").read_text().splitlines()
    assert run[-1] == "make test"


def test_the_portal_commands_in_the_readme_are_the_ones_the_demo_runs(readme: list[Any]) -> None:
    run_demo = _load_run_demo()
    for kind, prefix in (("django", "python manage.py "), ("flask", "flask --app app ")):
        portal = run_demo.PORTALS[kind]
        commands = [" ".join(portal.prepare), " ".join(portal.serve)]
        block = next(b.code for b in readme if f"cd example_projects/{kind}_portal" in b.code)
        steps = [
            line.split("#")[0][len(prefix) :].split()[0]
            for line in block.splitlines()
            if line.startswith(prefix)
        ]
        assert len(steps) == 2, block
        for step in steps:
            assert any(step in command for command in commands), (kind, step)


@pytest.mark.parametrize("kind", ["django", "flask", "fastapi"])
def test_the_demo_starts_and_serves_its_sign_in_page(kind: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "WATCHER_URL"}
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "example_projects" / "run_demo.py"),
            kind,
            "--check",
            "--port=0",
            "--emulator-port=0",
            f"--data-dir={tmp_path}",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Check passed" in output
    assert (tmp_path / "db.sqlite3").is_file()


def _shell(readme: list[Any]) -> str:
    return "\n".join(block.code for block in readme if block.lang == "sh")


def _load_run_demo() -> Any:
    spec = importlib.util.spec_from_file_location(
        "run_demo", REPO / "example_projects" / "run_demo.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_demo"] = module  # dataclasses look their module up while being made
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules["run_demo"]
    return module
