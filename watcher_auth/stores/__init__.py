"""Token stores: the contract and the process-local memory store.

Stores that need optional packages live in their own modules (``watcher_auth.stores.redis``,
``watcher_auth.stores.sqlalchemy``) so importing this package never imports them.
"""

from watcher_auth.stores._registry import (
    ENTRY_POINT_GROUP,
    import_string,
    resolve_store,
    store_names,
)
from watcher_auth.stores.base import AsyncTokenStore, ChangeListener, StoreWatch, TokenStore
from watcher_auth.stores.memory import MemoryStore

__all__ = [
    "ENTRY_POINT_GROUP",
    "AsyncTokenStore",
    "ChangeListener",
    "MemoryStore",
    "StoreWatch",
    "TokenStore",
    "import_string",
    "resolve_store",
    "store_names",
]
