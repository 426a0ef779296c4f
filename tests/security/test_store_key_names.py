"""A user key or server address chosen so that its record name is someone else's.

Stores name records by the text of their :class:`StoreKey` (Redis key names, Django cache
keys, change messages), and records are sealed to that text. Were it a plain ``api|server|user``,
the user key ``7|evil`` on one server and the user key ``evil`` on the server ``…/x|7`` would
share a record. Each part has its ``%`` and ``|`` escaped, so no two keys share a text.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from watcher_auth import MemoryStore, StoreKey, TokenStore
from watcher_auth.testing.contract import sample_pair

SERVER = "https://watcher.test/x"

# Pairs of keys whose parts, joined with a bare "|", would give one text.
SHARING_A_PLAIN_NAME = [
    (StoreKey(server=SERVER, user="7|evil"), StoreKey(server=SERVER + "|7", user="evil")),
    (StoreKey(server="x", user="y|z"), StoreKey(server="y", user="z", api="v3|x")),
    # Escaping "|" without escaping "%" would merge these two.
    (StoreKey(server=SERVER, user="a%7Cb"), StoreKey(server=SERVER, user="a|b")),
]

parts = st.text(alphabet=st.sampled_from("ab|%7C25 \n\x00é"), max_size=8) | st.text(max_size=12)
store_keys = st.builds(StoreKey, server=parts, user=parts, api=parts)


@pytest.fixture(
    params=[
        "memory",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("postgres", marks=pytest.mark.postgres),
        "sqlite",
        pytest.param("django_db", marks=pytest.mark.django_db),
        pytest.param(
            "django_postgres",
            marks=[
                pytest.mark.postgres,
                pytest.mark.django_db(databases=["postgres"], transaction=True),
            ],
        ),
        pytest.param("django_cache", marks=[pytest.mark.redis, pytest.mark.django_db]),
    ]
)
def any_store(request: pytest.FixtureRequest) -> TokenStore:
    """Every kind of store."""
    if request.param == "memory":
        return MemoryStore()
    make: Callable[[], TokenStore] = request.getfixturevalue(f"make_{request.param}_store")
    return make()


@pytest.mark.parametrize(("victim", "attacker"), SHARING_A_PLAIN_NAME)
def test_a_pipe_in_a_user_key_or_server_cannot_reach_another_keys_record(
    any_store: TokenStore, victim: StoreKey, attacker: StoreKey
) -> None:
    store = any_store
    store.save(victim, sample_pair(1))
    assert store.load(attacker) is None

    store.save(attacker, sample_pair(2))
    assert store.load(victim) == sample_pair(1)
    assert store.load(attacker) == sample_pair(2)
    store.delete(attacker)
    assert store.load(victim) == sample_pair(1)


@pytest.mark.redis
def test_listing_redis_records_gives_back_the_exact_keys(make_redis_store) -> None:
    store = make_redis_store()
    for n, (victim, attacker) in enumerate(SHARING_A_PLAIN_NAME):
        store.save(victim, sample_pair(2 * n))
        store.save(attacker, sample_pair(2 * n + 1))
    expected = {key for pair in SHARING_A_PLAIN_NAME for key in pair}
    assert set(store.iter_keys()) == expected
    for key in expected:
        assert store.load(key) is not None


@given(store_keys)
def test_the_text_of_a_store_key_parses_back_to_the_same_key(key: StoreKey) -> None:
    assert StoreKey.parse(str(key)) == key


@given(store_keys, store_keys)
@example(*SHARING_A_PLAIN_NAME[0])
@example(*SHARING_A_PLAIN_NAME[1])
@example(*SHARING_A_PLAIN_NAME[2])
def test_two_different_store_keys_never_share_a_text(one: StoreKey, other: StoreKey) -> None:
    assert (str(one) == str(other)) == (one == other)


@given(st.text(alphabet=st.sampled_from("v3|%7C25ab"), max_size=14))
def test_a_text_parses_only_if_it_is_the_text_of_the_key_it_gives(text: str) -> None:
    try:
        key = StoreKey.parse(text)
    except ValueError:
        return
    assert str(key) == text


@pytest.mark.parametrize(
    "text", ["v3|https://w.test", "v3|https://w.test|a|b", "v3|https://w.test|a%7cb", "v3|%41|u"]
)
def test_a_text_that_no_key_writes_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not the text of a store key"):
        StoreKey.parse(text)


def test_a_key_without_pipe_or_percent_keeps_the_name_its_records_already_have() -> None:
    key = StoreKey(server="https://watcher.example.com/base", user="42", api="v2")
    assert str(key) == "v2|https://watcher.example.com/base|42"
