"""The JSON endpoints: connect (API v3 and v2), disconnect and status."""

# No ``from __future__ import annotations``: FastAPI reads these signatures at run time.

import json
import unicodedata
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from fastapi_watcher_auth._plugin import get_state
from watcher_auth import (
    AsyncTokenManager,
    ConfigurationError,
    InvalidCredentials,
    TokenDecryptionError,
    TokenPair,
)
from watcher_auth.v2 import check_secret

if TYPE_CHECKING:
    from fastapi_watcher_auth._plugin import WatcherAuth

__all__ = ["MAX_BODY_BYTES", "MAX_SECRET_LENGTH", "MAX_USERNAME_LENGTH", "build_router"]

MAX_USERNAME_LENGTH = 150
MAX_SECRET_LENGTH = 1024
#: The largest request body the endpoints read.
MAX_BODY_BYTES = 8192


class _BadRequest(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.code, "message": self.message}, status_code=self.status)


def build_router(plugin: "WatcherAuth") -> APIRouter:
    """The plugin's router; every endpoint answers JSON and needs a signed-in portal user.

    ``POST connect`` takes ``{"username", "password"}``; ``POST connect/v2`` takes
    ``{"username", "api_key"}`` or ``{"username", "password"}``; ``POST disconnect`` forgets
    both records; ``GET status`` tells what is connected. POSTs must be
    ``Content-Type: application/json``, which a cross-site form cannot send.
    """
    router = APIRouter(tags=["watcher"])
    SignedIn = Annotated[str | None, Depends(plugin.signed_in_key)]

    @router.post("/connect", name="watcher_auth:connect")
    async def connect(request: Request, key: SignedIn) -> Any:
        """Log in to Watcher (API v3) once with the user's password; only tokens are kept."""
        if key is None:
            return _sign_in_first()
        try:
            username, password = _credentials(await _json_body(request), "password")
        except _BadRequest as refusal:
            return refusal.response()
        manager = get_state(request.app).manager
        try:
            pair = await manager.login(key, username=username, password=password)
        except InvalidCredentials:
            return _refused("Watcher did not accept this username and password.")
        return {"connected": True, "username": pair.username}

    @router.post("/connect/v2", name="watcher_auth:connect_v2")
    async def connect_v2(request: Request, key: SignedIn) -> Any:
        """Connect an API v2 account with a user API key (``api_key``) or a ``password``."""
        if key is None:
            return _sign_in_first()
        try:
            body = await _json_body(request)
            mode = "api_key" if "api_key" in body else "password"
            username, secret = _credentials(body, mode)
            if mode == "api_key":
                # The key and its login travel in HTTP headers: printable ASCII only.
                try:
                    check_secret(username, "username")
                    check_secret(secret, "API key")
                except ConfigurationError:
                    raise _BadRequest(
                        400,
                        "invalid_request",
                        "Use only letters, digits and punctuation, without spaces around them.",
                    ) from None
        except _BadRequest as refusal:
            return refusal.response()
        manager = get_state(request.app).manager
        try:
            if mode == "api_key":
                pair = await manager.v2_connect_user_key(key, username=username, api_key=secret)
            else:
                pair = await manager.v2_login(key, username=username, password=secret)
        except InvalidCredentials:
            what = "API key for this username" if mode == "api_key" else "username and password"
            return _refused(f"Watcher did not accept this {what}.")
        return {"connected": True, "username": pair.username, "scheme": pair.scheme}

    @router.post("/disconnect", name="watcher_auth:disconnect")
    async def disconnect(request: Request, key: SignedIn) -> Any:
        """Forget the user's API v3 tokens and API v2 session or key."""
        if key is None:
            return _sign_in_first()
        try:
            await _json_body(request, required=False)
        except _BadRequest as refusal:
            return refusal.response()
        existed = await forget(get_state(request.app).manager, key)
        return {"disconnected": existed}

    @router.get("/status", name="watcher_auth:status")
    async def status(request: Request, key: SignedIn) -> Any:
        """Whether the user's Watcher accounts are connected (no secret in the answer)."""
        if key is None:
            return _sign_in_first()
        state = get_state(request.app)
        manager = state.manager
        pair, unreadable = await _readable(manager, key, "v3")
        v2_pair, v2_unreadable = await _readable(manager, key, "v2")
        answer: dict[str, Any] = {
            "connected": pair is not None,
            "needs_reconnect": unreadable,
            "connect_url": state.connect_url(request),
            "username": pair.username if pair else None,
            "connected_at": _when(pair.connected_at if pair else None),
            "refreshed_at": _when(pair.refreshed_at if pair else None),
            "expires_at": _when(pair.local_expires_at if pair else None),
            "v2": {
                "connected": v2_pair is not None,
                "needs_reconnect": v2_unreadable,
                "username": v2_pair.username if v2_pair else None,
                "scheme": v2_pair.scheme if v2_pair else None,
            },
        }
        return answer

    return router


async def forget(manager: AsyncTokenManager, key: str) -> bool:
    """Forget ``key``'s API v3 and v2 records; whether any existed.

    A record the current encryption keys cannot read is deleted too (deleting needs no key).
    """
    existed = False
    for api in ("v3", "v2"):
        try:
            found = await (manager.v2_logout(key) if api == "v2" else manager.logout(key))
        except TokenDecryptionError:
            await manager.store.delete(manager.store_key(key, api=api))
            found = True
        existed = found or existed
    return existed


async def _readable(
    manager: AsyncTokenManager, key: str, api: str
) -> tuple[TokenPair | None, bool]:
    try:
        pair = await (manager.v2_tokens(key) if api == "v2" else manager.tokens(key))
    except TokenDecryptionError:
        return None, True
    return pair, False


async def _json_body(request: Request, *, required: bool = True) -> dict[str, Any]:
    """The request's JSON object, read up to :data:`MAX_BODY_BYTES`."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise _BadRequest(
            415, "unsupported_media_type", "Send the request as Content-Type: application/json."
        )
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise _BadRequest(413, "request_too_large", "The request body is too large.")
    if not raw and not required:
        return {}
    try:
        # Decoded as UTF-8 explicitly: json.loads would guess UTF-16 or UTF-32 from the bytes.
        body = json.loads(bytes(raw).decode("utf-8"))
    except ValueError:
        raise _BadRequest(400, "invalid_json", "The body is not UTF-8 JSON.") from None
    if not isinstance(body, dict):
        raise _BadRequest(400, "invalid_json", "The body must be a JSON object.")
    return body


def _credentials(body: dict[str, Any], field: str) -> tuple[str, str]:
    """``(username, secret)`` from ``body``; raises :class:`_BadRequest` when unusable."""
    username = body.get("username")
    secret = body.get(field)
    if not isinstance(username, str) or not isinstance(secret, str):
        raise _BadRequest(400, "invalid_request", f"Give the Watcher username and {field}.")
    username = username.strip()
    if not username or not secret:
        raise _BadRequest(400, "invalid_request", f"Give the Watcher username and {field}.")
    if len(username) > MAX_USERNAME_LENGTH or len(secret) > MAX_SECRET_LENGTH:
        raise _BadRequest(400, "invalid_request", f"The username or the {field} is too long.")
    if ":" in username or _unusable(username) or _unusable(secret):
        raise _BadRequest(
            400,
            "invalid_request",
            f"The username or the {field} has characters Watcher refuses.",
        )
    return username, secret


def _unusable(text: str) -> bool:
    """Control characters, or lone surrogates (``"\\ud800"`` in JSON) that UTF-8 cannot carry."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in text)


def _refused(message: str) -> JSONResponse:
    return JSONResponse(
        {"error": "watcher_invalid_credentials", "message": message}, status_code=400
    )


def _sign_in_first() -> JSONResponse:
    return JSONResponse(
        {
            "error": "login_required",
            "message": "Sign in to the portal before connecting a Watcher account.",
        },
        status_code=401,
    )


def _when(timestamp: float | None) -> str | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, tz=UTC).isoformat()
