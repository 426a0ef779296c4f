"""A bounded mapping that forgets its least recently used items."""

from __future__ import annotations

from collections import OrderedDict
from typing import TypeVar

__all__ = ["LRU"]

K = TypeVar("K")
V = TypeVar("V")


class LRU(OrderedDict[K, V]):
    """Holds at most ``maxsize`` items; storing one more drops the least recently used.

    :meth:`lookup` and storing count as a use; ``get`` and ``in`` do not. Each operation is
    one call into the C implementation of ``OrderedDict`` or a few, so callers that share an
    instance between threads guard writes with a lock of their own, as with any dict.
    """

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        super().__init__()
        self.maxsize = maxsize

    def lookup(self, key: K) -> V | None:
        """The item stored under ``key`` (now the most recently used), or ``None``."""
        value = self.get(key)
        if value is None:
            return None
        try:
            self.move_to_end(key)
        except KeyError:
            return value  # removed meanwhile by another thread: the value read stands
        return value

    def __setitem__(self, key: K, value: V) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        if len(self) > self.maxsize:
            self.popitem(last=False)
