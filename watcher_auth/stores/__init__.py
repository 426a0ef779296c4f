"""Token stores: the contracts, the process-local memory stores, and the async adapter.

Stores that need optional packages live in their own modules (``watcher_auth.stores.redis``,
``watcher_auth.stores.sqlalchemy``) so importing this package never imports them.
"""

from watcher_auth.stores._adapter import AsyncStoreAdapter
from watcher_auth.stores._registry import (
    ASYNC_ENTRY_POINT_GROUP,
    ENTRY_POINT_GROUP,
    async_store_names,
    import_string,
    resolve_async_store,
    resolve_store,
    store_names,
)
from watcher_auth.stores._waiting import Backoff
from watcher_auth.stores._watch import after_fork_in_child, keep_from_finalizing
from watcher_auth.stores.base import AsyncTokenStore, ChangeListener, StoreWatch, TokenStore
from watcher_auth.stores.memory import AsyncMemoryStore, MemoryStore

__all__ = [
    "ASYNC_ENTRY_POINT_GROUP",
    "ENTRY_POINT_GROUP",
    "AsyncMemoryStore",
    "AsyncStoreAdapter",
    "AsyncTokenStore",
    "Backoff",
    "ChangeListener",
    "MemoryStore",
    "StoreWatch",
    "TokenStore",
    "after_fork_in_child",
    "async_store_names",
    "import_string",
    "keep_from_finalizing",
    "resolve_async_store",
    "resolve_store",
    "store_names",
]
