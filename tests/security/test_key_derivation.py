"""Where the encryption key comes from, and what a thief holding a record can try against it.

A secret (a passphrase in ``ENCRYPTION_KEYS``, a framework's ``SECRET_KEY``) becomes the
AES-256-GCM key through HKDF-SHA256 with the purpose label ``watcher-auth token encryption
v2``; a generated key is used as given; a framework's ``SECRET_KEY`` is always derived, since
the framework signs with it too. The record format is spelled out here, so a change to it (or
to the label) cannot go unnoticed: records already stored depend on both.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import Flask

from flask_watcher_auth import WatcherAuth, get_state
from watcher_auth import (
    ConfigurationError,
    StoreKey,
    TokenDecryptionError,
    TokenPair,
    TokenStore,
)
from watcher_auth.crypto import TokenCipher, derive_key, generate_key
from watcher_auth.testing.contract import sample_pair

LABEL = b"watcher-auth token encryption v2"
KEY = StoreKey(server="https://watcher.test", user="42")
SECRET = "django-insecure-portal secret"


def rfc5869_hkdf_sha256(secret: bytes, info: bytes) -> bytes:
    """HKDF-SHA256 for one 32-byte block with no salt, straight from RFC 5869."""
    prk = hmac.new(b"\x00" * 32, secret, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


def open_record(record: bytes | str, aes_key: bytes, key: StoreKey) -> TokenPair:
    """What the documented format says: ``v2:``, then url-safe base64 of a 12-byte nonce and
    AES-256-GCM of the pair's JSON, its associated data naming the store key."""
    raw = record.encode() if isinstance(record, str) else record
    assert raw.startswith(b"v2:")
    blob = base64.urlsafe_b64decode(raw[3:])
    binding = b"watcher-auth record v2\x00" + str(key).encode()
    return TokenPair.from_json(AESGCM(aes_key).decrypt(blob[:12], blob[12:], binding))


def hkdf(secret: str | bytes) -> bytes:
    raw = secret.encode() if isinstance(secret, str) else secret
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=LABEL).derive(raw)


def test_a_secret_becomes_the_key_by_hkdf_sha256_with_the_purpose_label() -> None:
    expected = bytes.fromhex("573107f5deeec540316b68ffe634bb0e59f29b089bbf81efc8e42af9c220b9e6")
    assert derive_key(SECRET) == expected
    assert hkdf(SECRET) == expected
    assert rfc5869_hkdf_sha256(SECRET.encode(), LABEL) == expected
    assert derive_key(SECRET.encode()) == expected


def test_a_record_sealed_with_a_passphrase_opens_with_the_derived_key_and_nothing_else() -> None:
    record = TokenCipher([SECRET]).dumps(sample_pair(1), KEY)
    assert open_record(record, hkdf(SECRET), KEY) == sample_pair(1)
    with pytest.raises(InvalidTag):
        open_record(record, hashlib.sha256(SECRET.encode()).digest(), KEY)  # no bare hash
    with pytest.raises(InvalidTag):
        open_record(record, hkdf(SECRET), StoreKey(server=KEY.server, user="43"))


def test_a_generated_key_is_used_as_given_in_any_of_its_forms() -> None:
    text = generate_key()
    raw = base64.urlsafe_b64decode(text)
    assert len(text) == 44 and len(raw) == 32
    standard = base64.standard_b64encode(raw).decode()
    for form in (text, text.encode(), raw, standard):
        record = TokenCipher([form]).dumps(sample_pair(1), KEY)
        assert open_record(record, raw, KEY) == sample_pair(1)
    assert generate_key() != text


def test_a_string_that_only_resembles_a_key_is_derived() -> None:
    almost = "A" * 43 + "!"  # 44 characters, not base64
    assert derive_key(almost) == hkdf(almost)
    assert derive_key(b"32 bytes of text, but a str form") == b"32 bytes of text, but a str form"
    assert derive_key("32 bytes of text, but a str form") == hkdf(
        "32 bytes of text, but a str form"
    )


def test_a_thief_with_a_record_can_try_passphrases_offline_at_hkdf_speed() -> None:
    # What SECURITY.md warns of: HKDF does not stretch, and the record is all a guess needs.
    # A passphrase is as strong as its entropy; a generated key has 256 bits.
    record = TokenCipher(["summer2024"]).dumps(sample_pair(1), KEY)
    found = []
    for guess in ("password", "portal", "summer2023", "summer2024", "winter2024"):
        try:
            TokenCipher([guess], legacy=False).loads(record, KEY)
        except TokenDecryptionError:
            continue
        found.append(guess)
    assert found == ["summer2024"]


@pytest.mark.django_db
def test_django_encrypts_with_a_key_derived_from_secret_key_even_one_that_looks_generated(
    settings,
) -> None:
    from django_watcher_auth.models import WatcherAccount
    from django_watcher_auth.stores import DjangoModelStore

    settings.SECRET_KEY = generate_key()
    settings.SECRET_KEY_FALLBACKS = []
    DjangoModelStore().save(KEY, sample_pair(1))
    record = WatcherAccount.objects.get(user_key=KEY.user).record
    assert open_record(record, hkdf(settings.SECRET_KEY), KEY) == sample_pair(1)
    with pytest.raises(InvalidTag):
        open_record(record, base64.urlsafe_b64decode(settings.SECRET_KEY), KEY)

    old = settings.SECRET_KEY
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "a newer secret key", [old]
    assert DjangoModelStore().load(KEY) == sample_pair(1)


@pytest.fixture
def flask_stores() -> Iterator[list[TokenStore]]:
    stores: list[TokenStore] = []
    yield stores
    for store in stores:
        store.close()


def flask_store(stores: list[TokenStore], database: Path, **config: object) -> TokenStore:
    app = Flask("portal")
    app.config.update(
        WATCHER_URL="http://127.0.0.1:1",
        WATCHER_STORE="sqlalchemy",
        WATCHER_SQLALCHEMY_URL=f"sqlite:///{database}",
        **config,
    )
    WatcherAuth(app)
    store = get_state(app).store
    stores.append(store)
    return store


def test_flask_encrypts_with_a_key_derived_from_secret_key_and_reads_with_its_fallbacks(
    tmp_path: Path, flask_stores: list[TokenStore]
) -> None:
    database = tmp_path / "tokens.sqlite3"
    secret = os.urandom(32)  # a common SECRET_KEY; it also signs the session cookie
    flask_store(flask_stores, database, SECRET_KEY=secret).save(KEY, sample_pair(1))

    from sqlalchemy import create_engine, text

    engine = create_engine(f"sqlite:///{database}")
    with engine.begin() as conn:
        record = conn.execute(text("SELECT record FROM watcher_auth_tokens")).scalar_one()
    engine.dispose()
    assert open_record(record, hkdf(secret), KEY) == sample_pair(1)
    with pytest.raises(InvalidTag):
        open_record(record, secret, KEY)

    rotated = flask_store(
        flask_stores, database, SECRET_KEY="a newer secret", SECRET_KEY_FALLBACKS=[secret]
    )
    assert rotated.load(KEY) == sample_pair(1)
    forgotten = flask_store(flask_stores, database, SECRET_KEY="a newer secret")
    with pytest.raises(TokenDecryptionError, match="SECRET_KEY"):
        forgotten.load(KEY)


@pytest.mark.parametrize("keys", ["one string", b"bytes", [SECRET, 42], [SECRET, ["nested"]]])
def test_keys_that_are_not_a_list_of_strings_are_refused_not_misread(keys: object) -> None:
    with pytest.raises(ConfigurationError, match="must be a list of keys"):
        TokenCipher(keys, setting="WATCHER_ENCRYPTION_KEYS")  # type: ignore[arg-type]


def test_an_unset_key_in_the_list_is_skipped() -> None:
    record = TokenCipher([None, SECRET, ""]).dumps(sample_pair(1), KEY)  # type: ignore[list-item]
    assert open_record(record, hkdf(SECRET), KEY) == sample_pair(1)
