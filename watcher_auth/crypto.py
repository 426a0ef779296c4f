"""Encryption of stored records, shared by the database and cache stores.

A record is sealed with AES-256-GCM, and the text of the :class:`~watcher_auth.StoreKey` it
is stored under (API, Watcher server, user key) is its associated data: a record copied to
another key's row or name no longer decrypts. Its text form is ``v2:`` followed by the
url-safe base64 of a random 96-bit nonce and the ciphertext with its tag.

Keys come from settings as a list, newest first: the first encrypts, every one decrypts, so
keys rotate without losing records. Each is either a generated key (32 raw bytes, or their
base64 in 44 characters, such as ``Fernet.generate_key()`` gives), used as given, or any other
secret (a framework's ``SECRET_KEY``), from which HKDF-SHA256 derives the key under the label
:data:`KEY_DERIVATION_LABEL`. HKDF does not stretch: a derived key is exactly as hard to guess
as the secret it comes from.

Records of the earlier format (Fernet, not bound to their key) are still read, with the keys
that format derived from the same settings, until the next save rewrites them in the new one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from watcher_auth._exceptions import ConfigurationError, TokenDecryptionError
from watcher_auth._tokens import StoreKey, TokenPair

__all__ = ["KEY_DERIVATION_LABEL", "RECORD_PREFIX", "TokenCipher", "derive_key", "generate_key"]

#: The HKDF ``info`` that makes an encryption key from a secret: it keeps the key apart from
#: every other use of the same secret (Django's and Flask's signing, for example).
KEY_DERIVATION_LABEL = b"watcher-auth token encryption v2"

#: How a record of the current format starts.
RECORD_PREFIX = b"v2:"

# Prepended to the store key's text in the associated data, so a record's binding cannot be
# mistaken for any other authenticated value made with the same key.
_BINDING_CONTEXT = b"watcher-auth record v2\x00"
_NONCE_SIZE = 12
_KEY_SIZE = 32
_LEGACY_CONTEXT = b"watcher-auth token encryption v1:"
_LEGACY_PREFIX = b"gAAAAA"  # Fernet's version byte and the top of its timestamp, in base64


def generate_key() -> str:
    """A new random key (32 bytes from the OS, url-safe base64 in 44 characters) for settings."""
    return base64.urlsafe_b64encode(os.urandom(_KEY_SIZE)).decode("ascii")


def derive_key(secret: str | bytes, *, always: bool = False) -> bytes:
    """The 32-byte AES-256-GCM key for one configured key or secret.

    32 raw bytes, or a 44-character base64 (standard or url-safe) text of 32 bytes, is a key
    already and is returned as is (decoded), unless ``always``. Anything else is a secret: the
    key is HKDF-SHA256 of it, with no salt and ``info`` :data:`KEY_DERIVATION_LABEL`.

    Args:
        secret: the configured key or secret.
        always: derive even from what looks like a key: for a framework's ``SECRET_KEY``,
            which also signs other things and must not be used as an encryption key itself.
    """
    raw = secret.encode() if isinstance(secret, str) else bytes(secret)
    if not always:
        if isinstance(secret, bytes) and len(raw) == _KEY_SIZE:
            return raw
        given = _decoded_key(raw)
        if given is not None:
            return given
    hkdf = HKDF(algorithm=hashes.SHA256(), length=_KEY_SIZE, salt=None, info=KEY_DERIVATION_LABEL)
    return hkdf.derive(raw)


class TokenCipher:
    """Seals :class:`~watcher_auth.TokenPair` records to the store key they are kept under.

    Args:
        keys: one or more keys or secrets, newest first. The first encrypts, all decrypt.
        setting: the name of the setting the keys come from, named in errors.
        legacy: also read records of the earlier, unbound format (they are rewritten in the
            current one at their next save). Turn it off once every record has been saved
            again, so an old record can no longer be planted in another key's place.
        derive_all: derive every key with HKDF, even one that looks like a generated key (see
            :func:`derive_key`); for keys that are a framework's secrets.

    Raises:
        ConfigurationError: no key is given, or ``keys`` is not a list of strings or bytes.
    """

    def __init__(
        self,
        keys: Sequence[str | bytes],
        *,
        setting: str = "encryption keys",
        legacy: bool = True,
        derive_all: bool = False,
    ) -> None:
        # Empty entries (an unset environment variable) are skipped; other types are refused.
        usable = [] if isinstance(keys, (str, bytes)) else [k for k in keys if k]
        if isinstance(keys, (str, bytes)) or not all(isinstance(k, (str, bytes)) for k in usable):
            raise ConfigurationError(f"{setting} must be a list of keys (strings or bytes)")
        if not usable:
            raise ConfigurationError(f"{setting} is empty: at least one encryption key is needed")
        self.setting = setting
        self._aeads = [AESGCM(derive_key(k, always=derive_all)) for k in usable]
        self._legacy = MultiFernet([Fernet(_legacy_key(k)) for k in usable]) if legacy else None

    def encrypt(self, data: bytes, key: StoreKey) -> bytes:
        """Seal ``data`` with the newest key, bound to ``key``."""
        nonce = os.urandom(_NONCE_SIZE)
        sealed = self._aeads[0].encrypt(nonce, data, _binding(key))
        return RECORD_PREFIX + base64.urlsafe_b64encode(nonce + sealed)

    def decrypt(self, token: bytes | str, key: StoreKey) -> bytes:
        """Open a record stored under ``key`` with any configured key.

        Raises:
            TokenDecryptionError: no key opens it, it was sealed for another store key, or
                it is not a record at all.
        """
        raw = token.encode() if isinstance(token, str) else bytes(token)
        if raw.startswith(RECORD_PREFIX):
            return self._open(raw[len(RECORD_PREFIX) :], key)
        if self._legacy is None:
            if raw.startswith(_LEGACY_PREFIX):
                raise TokenDecryptionError(
                    "a stored Watcher record is in the earlier format, not bound to its key, "
                    f"and the cipher for {self.setting} no longer reads that format"
                )
        else:
            try:
                return self._legacy.decrypt(raw)
            except (InvalidToken, TypeError, ValueError):
                pass
        raise self._unreadable()

    def dumps(self, pair: TokenPair, key: StoreKey) -> bytes:
        """Encrypt a whole record for ``key`` (ASCII text, as bytes)."""
        return self.encrypt(pair.to_json().encode(), key)

    def loads(self, token: bytes | str, key: StoreKey) -> TokenPair:
        """Decrypt a record that :meth:`dumps` wrote for ``key``.

        Raises:
            TokenDecryptionError: see :meth:`decrypt`; also when the plain text is not a record.
        """
        pair = _parse(self.decrypt(token, key))
        if pair is None:
            # Raised here, outside any handler, so no frame or chained exception of the error
            # holds the decrypted text (crash reporters record frame locals).
            raise TokenDecryptionError(
                f"a stored Watcher record decrypts with the keys in {self.setting} "
                "but is corrupt: not a token record"
            )
        return pair

    def _open(self, body: bytes, key: StoreKey) -> bytes:
        try:
            blob = base64.urlsafe_b64decode(body)
        except (binascii.Error, ValueError):
            raise self._unreadable() from None
        nonce, sealed = blob[:_NONCE_SIZE], blob[_NONCE_SIZE:]
        if len(nonce) != _NONCE_SIZE:
            raise self._unreadable()
        binding = _binding(key)
        for aead in self._aeads:
            try:
                return aead.decrypt(nonce, sealed, binding)
            except InvalidTag:
                continue
        raise self._unreadable()

    def _unreadable(self) -> TokenDecryptionError:
        return TokenDecryptionError(
            f"a stored Watcher record cannot be decrypted with the keys in {self.setting}: "
            "the key was changed (put the new key first and keep the old one in the list), "
            "or the record was written for another user or server"
        )

    def __repr__(self) -> str:
        return f"TokenCipher(setting={self.setting!r})"


def _parse(plain: bytes) -> TokenPair | None:
    try:
        return TokenPair.from_json(plain)
    except (ValueError, TypeError, AttributeError):
        # AttributeError: valid JSON that is not an object (a list, a string, null).
        return None


def _binding(key: StoreKey) -> bytes:
    # surrogatepass: a user key holding a lone surrogate still has exactly one binding.
    return _BINDING_CONTEXT + str(key).encode("utf-8", "surrogatepass")


def _decoded_key(raw: bytes) -> bytes | None:
    if len(raw) != 44:
        return None
    for altchars in (b"-_", b"+/"):
        try:
            decoded = base64.b64decode(raw, altchars=altchars, validate=True)
        except (binascii.Error, ValueError):
            continue
        if len(decoded) == _KEY_SIZE:
            return decoded
    return None


def _legacy_key(secret: str | bytes) -> bytes:
    """The Fernet key the earlier record format used for ``secret`` (for reading only)."""
    raw = secret.encode() if isinstance(secret, str) else secret
    try:
        if len(base64.urlsafe_b64decode(raw)) == 32 and len(raw) == 44:
            return raw
    except (binascii.Error, ValueError):
        pass
    digest = hashlib.sha256(_LEGACY_CONTEXT + raw).digest()
    return base64.urlsafe_b64encode(digest)
