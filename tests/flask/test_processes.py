"""One Flask app forked into worker processes, as a pre-forking server runs it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from flask_watcher_auth import get_state
from watcher_auth.testing import SharedClock, WatcherEmulator
from watcher_auth.testing.storm import run_storm

pytestmark = pytest.mark.multiprocess


@pytest.fixture
def fake_clock() -> SharedClock:
    """One clock for the emulator, this process and the forked workers."""
    return SharedClock()


@pytest.fixture(
    params=[
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("postgres", marks=pytest.mark.postgres),
    ]
)
def shared_store_config(request: pytest.FixtureRequest) -> dict[str, Any]:
    config: dict[str, Any] = request.getfixturevalue(f"{request.param}_store_config")
    return config


def test_forked_workers_share_one_login_and_one_refresh_per_expiry(
    make_app: Callable[..., Flask],
    shared_store_config: dict[str, Any],
    emulator: WatcherEmulator,
    fake_clock: SharedClock,
    sign_in: Callable[[FlaskClient, str], None],
    connect: Callable[..., TestResponse],
) -> None:
    emulator.configure(rotate_refresh_tokens=True)
    app = make_app(**shared_store_config)
    client = app.test_client()
    sign_in(client, "1")
    connect(client)
    state = get_state(app)

    # Each worker's first use of state.manager builds that process's own manager.
    result = run_storm(
        lambda: state.manager,
        clock=fake_clock,
        lifetime=300,
        processes=4,
        threads=8,
        key="1",
        before_fork=state.store.close,
    )

    stats = emulator.stats
    assert result.errors == []
    assert result.calls == 4 * 8 * 4 * 3
    assert (stats.password_logins, stats.refreshes, stats.rejected_refreshes) == (1, 3, 0)
