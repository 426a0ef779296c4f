"""``flask watcher status | disconnect USER | check``."""

from __future__ import annotations

from datetime import datetime, timezone

import click
import requests
from flask.cli import AppGroup

from flask_watcher_auth._extension import get_state
from flask_watcher_auth._views import forget
from watcher_auth import (
    MemoryStore,
    StoreError,
    TokenDecryptionError,
    TokenManager,
    WatcherAuthError,
)
from watcher_auth.web import portal_id, portal_key, unreadable_keys

__all__ = ["watcher_cli"]

watcher_cli = AppGroup("watcher", help="The Watcher accounts of this portal's users.")


@watcher_cli.command("status")
def status_command() -> None:
    """List the user keys with a connected Watcher account."""
    state = get_state()
    manager = state.manager
    click.echo(f"Watcher: {manager.server}")
    click.echo(f"Store:   {state.store!r}")
    keys = list(state.store.iter_keys(server=manager.server, api="v3"))
    if not keys:
        click.echo("No connected Watcher accounts (a memory store lists only this process's).")
        return
    click.echo(f"{'USER KEY':<24} {'WATCHER USER':<24} {'ACCESS TOKEN EXPIRES (UTC)':<26}")
    for skey in keys:
        who = _user_id(skey.user)
        try:
            pair = state.store.load(skey)
        except TokenDecryptionError:
            click.echo(f"{who:<24} (needs reconnect: the current keys cannot read it)")
            continue
        except StoreError as exc:
            click.echo(f"{who:<24} (unreadable: {exc})")
            continue
        if pair is None:
            continue
        click.echo(f"{who:<24} {pair.username or '?':<24} {_utc(pair.local_expires_at):<26}")
    click.echo(f"{len(keys)} connected account(s).")


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
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
