"""How each store is set up for the benchmarks (services on 127.0.0.1)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from watcher_auth import MemoryStore, TokenManager


class StoreUnavailable(Exception):
    """The store's service or package is missing here; its rows are skipped."""


MakeManager = Callable[[str, Callable[[], float]], TokenManager]
Prepared = tuple[MakeManager, Callable[[], None] | None, str]


@dataclass
class StoreSpec:
    prepare: Callable[[], Prepared]
    shared: bool = True


def _memory() -> Prepared:
    store = MemoryStore()
    return (lambda url, clock: TokenManager(url, store=store, clock=clock)), None, ""


STORES: dict[str, StoreSpec] = {
    "memory": StoreSpec(_memory, shared=False),
}
