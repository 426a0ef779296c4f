"""``flask watcher status | disconnect USER | check``."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import click
import requests
from flask.cli import AppGroup

from flask_watcher_auth._extension import get_state
from flask_watcher_auth._views import forget
from watcher_auth import (
    MemoryStore,
    StoreError,
    StoreKey,
    TokenDecryptionError,
    TokenManager,
    TokenStore,
    WatcherAuthError,
)
from watcher_auth.web import portal_id, portal_key, unreadable_keys

__all__ = ["watcher_cli"]

watcher_cli = AppGroup("watcher", help="The Watcher accounts of this portal's users.")


@watcher_cli.command("status")
def status_command() -> None:
    """List every stored Watcher account: API, Watcher user, access token expiry (on Watcher's
    clock, and how long from now), last refresh and connected since. Never prints a token."""
    state = get_state()
    manager = state.manager
    store = state.store
    click.echo(f"Watcher: {manager.server}")
    click.echo(f"Store:   {store!r}")
    if type(store).iter_keys is TokenStore.iter_keys:
        click.echo(
            f"The {type(store).__name__} store cannot list its records, so its connected "
            "accounts cannot be shown here."
        )
        return
    now = (state.settings.clock or time.time)()
    try:
        rows = [_status_row(store, skey, now) for skey in store.iter_keys(server=manager.server)]
    except StoreError as exc:
        raise click.ClickException(f"the token store failed: {exc}") from None
    found = [row for row in rows if row is not None]
    if not found:
        click.echo("No connected Watcher accounts (a memory store lists only this process's).")
        return
    header = (
        "USER",
        "WATCHER USER",
        "API",
        "ACCESS TOKEN EXPIRES (WATCHER CLOCK)",
        "LAST REFRESH",
        "CONNECTED SINCE",
    )
    table = [header, *found]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        click.echo("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
    click.echo(f"{len(found)} connected account(s).")


def _status_row(store: TokenStore, skey: StoreKey, now: float) -> tuple[str, ...] | None:
    """The status line of ``skey``'s record, or ``None`` when it is gone."""
    who = _user_id(skey.user)
    try:
        pair = store.load(skey)
    except TokenDecryptionError:
        return (who, "?", skey.api, "cannot be read (needs reconnect)", "-", "-")
    except StoreError as exc:
        return (who, "?", skey.api, f"unreadable: {exc}", "-", "-")
    if pair is None:
        return None
    if pair.expires_at is None or pair.local_expires_at is None:
        expiry = "no expiry"
    else:
        left = pair.local_expires_at - now
        relative = f"in {int(left)} s" if left > 0 else f"expired {int(-left)} s ago"
        expiry = f"{_utc(pair.expires_at)} ({relative})"
    return (
        who,
        pair.username or "?",
        skey.api,
        expiry,
        _utc(pair.refreshed_at),
        _utc(pair.connected_at),
    )


@watcher_cli.command("disconnect")
@click.argument("user_id")
def disconnect_command(user_id: str) -> None:
    """Forget USER_ID's Watcher credentials (API v3 tokens and any API v2 session or key).

    USER_ID is the portal user's id (Flask-Login's ``get_id()``). Records the current
    encryption keys cannot read are deleted too.
    """
    try:
        found = forget(get_state().manager, portal_key(user_id))
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    if found:
        click.echo(f"Disconnected the Watcher account of portal user {user_id!r}.")
    else:
        raise click.ClickException(f"portal user {user_id!r} has no connected Watcher account")


@watcher_cli.command("check")
@click.option("--username", help="Also log in as this Watcher user (asks for the password).")
def check_command(username: str | None) -> None:
    """Check the store and that WATCHER_URL answers; with --username, try a login.

    Reports how many stored records the current encryption keys cannot read (for stores
    that can list their keys); nothing is deleted and nothing is stored.
    """
    state = get_state()
    settings = state.settings
    _check_store(state.manager)
    probe = TokenManager(
        settings.url, store=MemoryStore(), timeout=settings.timeout, verify=settings.verify_tls
    )
    try:
        _check_reachable(probe, settings.verify_tls)
        if username is not None:
            password = click.prompt(f"Watcher password for {username}", hide_input=True)
            try:
                pair = probe.login("cli-check", username=username, password=password)
            except WatcherAuthError as exc:
                raise click.ClickException(f"login as {username!r} failed: {exc}") from None
            lifetime = "an unknown time" if pair.lifetime is None else f"{pair.lifetime:.0f} s"
            click.echo(
                f"Logged in as {username!r}; the access token lasts {lifetime}. Nothing was stored."
            )
    finally:
        probe.close()


def _check_store(manager: TokenManager) -> None:
    try:
        unreadable = unreadable_keys(manager)
    except StoreError as exc:
        raise click.ClickException(f"the token store failed: {exc}") from None
    if unreadable is None:
        click.echo("Store:   cannot list its records; unreadable records are not counted.")
    elif unreadable:
        click.echo(
            f"Warning: {len(unreadable)} stored record(s) cannot be read with the current "
            "encryption keys (WATCHER_ENCRYPTION_KEYS / SECRET_KEY). Their users see "
            "'needs reconnect'; add the old key back to read them, or they are replaced when "
            "the users connect again.",
            err=True,
        )
    else:
        click.echo("Store:   every stored record can be read with the current keys.")


def _user_id(key: str) -> str:
    found = portal_id(key)
    return found if found is not None else f"({key})"


def _check_reachable(probe: TokenManager, verify: bool | str) -> None:
    """Any answer below 500 proves Watcher is there: without a token the API answers 401."""
    try:
        with requests.Session() as http:
            http.trust_env = False
            response = http.get(probe.api_root + "profile", timeout=probe.timeout, verify=verify)
    except requests.RequestException as exc:
        raise click.ClickException(
            f"Watcher at {probe.server} cannot be reached ({type(exc).__name__})"
        ) from None
    if response.status_code >= 500:
        raise click.ClickException(
            f"Watcher at {probe.server} answered HTTP {response.status_code}"
        )
    click.echo(f"Watcher at {probe.server} answers (HTTP {response.status_code} without a token).")


def _utc(timestamp: float | None) -> str:
    if timestamp is None:
        return "never"
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
