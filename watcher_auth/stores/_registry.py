"""Finding a store by short name (entry point) or dotted path."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from watcher_auth._exceptions import ConfigurationError
from watcher_auth.stores.base import AsyncTokenStore, TokenStore

__all__ = [
    "ASYNC_ENTRY_POINT_GROUP",
    "ENTRY_POINT_GROUP",
    "async_store_names",
    "import_string",
    "resolve_async_store",
    "resolve_store",
    "store_names",
]

ENTRY_POINT_GROUP = "watcher_auth.stores"
ASYNC_ENTRY_POINT_GROUP = "watcher_auth.async_stores"


def store_names() -> list[str]:
    """The short names registered in the ``watcher_auth.stores`` entry-point group."""
    return sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def async_store_names() -> list[str]:
    """The short names registered in the ``watcher_auth.async_stores`` entry-point group."""
    return sorted({ep.name for ep in entry_points(group=ASYNC_ENTRY_POINT_GROUP)})


def import_string(path: str) -> Any:
    """Import ``"package.module:Name"`` or ``"package.module.Name"``."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ConfigurationError(f"{path!r} is not a dotted path to an object")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module_name!r} for {path!r}: {exc}") from exc
    try:
        obj = module
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise ConfigurationError(f"{module_name!r} has no attribute {attr!r}") from None
    return obj


def resolve_store(spec: str | type[TokenStore] | TokenStore, **options: Any) -> TokenStore:
    """Build a store from a short name, a dotted path, a class, or return an instance as is.

    Args:
        spec: ``"memory"``, ``"redis"``, ``"sqlalchemy"``, any name a package registers in the
            ``watcher_auth.stores`` entry-point group, ``"package.module:Class"``, a
            :class:`TokenStore` subclass, or an instance.
        **options: keyword arguments for the store's constructor.

    Raises:
        ConfigurationError: the name is unknown or does not lead to a TokenStore.
    """
    if isinstance(spec, TokenStore):
        return spec
    target: Any = spec
    if isinstance(spec, str):
        if "." in spec or ":" in spec:
            target = import_string(spec)
        else:
            matches = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == spec]
            if not matches:
                known = ", ".join(store_names()) or "none"
                raise ConfigurationError(f"unknown token store {spec!r} (known: {known})")
            try:
                target = matches[0].load()
            except ImportError as exc:
                raise ConfigurationError(
                    f"token store {spec!r} needs a package that is not installed: {exc}"
                ) from exc
    if isinstance(target, type) and issubclass(target, TokenStore):
        return target(**options)
    if callable(target):
        store = target(**options)
        if isinstance(store, TokenStore):
            return store
    raise ConfigurationError(f"{spec!r} is not a TokenStore")


def resolve_async_store(
    spec: str | type[AsyncTokenStore] | type[TokenStore] | AsyncTokenStore | TokenStore,
    **options: Any,
) -> AsyncTokenStore:
    """Build an async store like :func:`resolve_store` builds a sync one.

    Short names come from the ``watcher_auth.async_stores`` entry-point group
    (``"memory"``, ``"redis"``, ``"sqlalchemy"``...). A sync store, or a name, path or class
    that leads to one, becomes the async store its ``as_async()`` method returns when it has
    one, and otherwise runs in :class:`~watcher_auth.stores.AsyncStoreAdapter`.

    Raises:
        ConfigurationError: the name is unknown or does not lead to a store.
    """
    if isinstance(spec, AsyncTokenStore):
        return spec
    if isinstance(spec, TokenStore):
        return _async_twin(spec)
    target: Any = spec
    if isinstance(spec, str) and "." not in spec and ":" not in spec:
        matches = [ep for ep in entry_points(group=ASYNC_ENTRY_POINT_GROUP) if ep.name == spec]
        if not matches:
            return _async_twin(resolve_store(spec, **options))
        try:
            target = matches[0].load()
        except ImportError as exc:
            raise ConfigurationError(
                f"token store {spec!r} needs a package that is not installed: {exc}"
            ) from exc
    elif isinstance(spec, str):
        target = import_string(spec)
    store = target(**options) if callable(target) else target
    if isinstance(store, AsyncTokenStore):
        return store
    if isinstance(store, TokenStore):
        return _async_twin(store)
    raise ConfigurationError(f"{spec!r} is not a token store")


def _async_twin(store: TokenStore) -> AsyncTokenStore:
    # A sync store may know better how to run off the loop (Django's stores do: their
    # connections belong to threads); any other runs in the generic adapter.
    as_async = getattr(store, "as_async", None)
    if callable(as_async):
        twin = as_async()
        if isinstance(twin, AsyncTokenStore):
            return twin
    from watcher_auth.stores._adapter import AsyncStoreAdapter

    return AsyncStoreAdapter(store)
