"""A reference count over keys of any type: an object lives while something holds it.

The node's per-pod chains live while a local pod dispatches to them, and peer sets while a chain
uses them (:mod:`compiler.chainstore`); both are counted here, so the rule "create on the first
reference, drop on the last" is written once.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

from compiler.errors import InternalError

K = TypeVar("K", bound=Hashable)


class RefCount(Generic[K]):
    """How many holders each key has. :meth:`acquire` says when a key gets its first holder,
    :meth:`release` when it loses its last, which is when the caller creates or drops the object."""

    def __init__(self) -> None:
        self._counts: dict[K, int] = {}

    def acquire(self, key: K) -> bool:
        """One more holder of ``key``; True if it is the first."""
        count = self._counts.get(key, 0)
        self._counts[key] = count + 1
        return count == 0

    def release(self, key: K) -> bool:
        """One holder fewer; True if it was the last (the key is then forgotten). Releasing a key
        nobody holds is a bug of the caller, never bad input."""
        count = self._counts.get(key, 0)
        if count == 0:
            raise InternalError(f"released {key!r}, which nothing holds")
        if count == 1:
            del self._counts[key]
            return True
        self._counts[key] = count - 1
        return False

    def count(self, key: K) -> int:
        return self._counts.get(key, 0)
