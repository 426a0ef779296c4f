"""Encryption of stored records (Fernet), shared by the database and cache stores.

A key is either a Fernet key (32 url-safe base64 bytes) or any secret string, from which
a Fernet key is derived (the frameworks pass their ``SECRET_KEY`` by default). With several
keys the first encrypts and all decrypt, so keys rotate without losing records.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from watcher_auth._exceptions import ConfigurationError, TokenDecryptionError
from watcher_auth._tokens import TokenPair

__all__ = ["TokenCipher", "derive_key"]

_DERIVATION_CONTEXT = b"watcher-auth token encryption v1:"


def derive_key(secret: str | bytes) -> bytes:
    """A Fernet key from an arbitrary secret (used as is if it already is a Fernet key)."""
    raw = secret.encode() if isinstance(secret, str) else secret
    try:
        if len(base64.urlsafe_b64decode(raw)) == 32 and len(raw) == 44:
            return raw
    except (binascii.Error, ValueError):
        pass
    digest = hashlib.sha256(_DERIVATION_CONTEXT + raw).digest()
    return base64.urlsafe_b64encode(digest)


class TokenCipher:
    """Encrypts and decrypts :class:`~watcher_auth.TokenPair` records.

    Args:
        keys: one or more keys or secrets, newest first. The first encrypts, all decrypt.
        setting: the name of the setting the keys come from, named in errors.
    """

    def __init__(self, keys: Sequence[str | bytes], *, setting: str = "encryption keys") -> None:
        usable = [k for k in keys if k]
        if not usable:
            raise ConfigurationError(f"{setting} is empty: at least one encryption key is needed")
        self.setting = setting
        self._fernet = MultiFernet([Fernet(derive_key(k)) for k in usable])

    def encrypt(self, data: bytes) -> bytes:
        """Encrypt with the newest key."""
        return self._fernet.encrypt(data)

    def decrypt(self, token: bytes | str) -> bytes:
        """Decrypt with any configured key, or raise :class:`TokenDecryptionError`."""
        try:
            return self._fernet.decrypt(token.encode() if isinstance(token, str) else token)
        except (InvalidToken, TypeError, ValueError):
            raise TokenDecryptionError(
                f"a stored Watcher record cannot be decrypted with the keys in {self.setting}; "
                "if the key was changed, put the new key first and keep the old one in the list"
            ) from None

    def dumps(self, pair: TokenPair) -> bytes:
        """Encrypt a whole record."""
        return self.encrypt(pair.to_json().encode())

    def loads(self, token: bytes | str) -> TokenPair:
        """Decrypt a record written by :meth:`dumps`."""
        plain = self.decrypt(token)
        try:
            return TokenPair.from_json(plain)
        except (ValueError, TypeError, AttributeError) as exc:
            # AttributeError: valid JSON that is not an object (a list, a string, null).
            raise TokenDecryptionError(f"a stored Watcher record is corrupt ({exc})") from None

    def __repr__(self) -> str:
        return f"TokenCipher(setting={self.setting!r})"
