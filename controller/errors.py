"""Errors of the controller: the user's (bad input, an impossible request) versus our own bugs.

The compiler's errors (:mod:`compiler.errors`) are re-exported so the controller's parts catch
and raise from one place; what the controller adds is only what the compiler cannot know about,
such as a command line asking for a node the manifests do not have.
"""

from __future__ import annotations

from compiler.errors import InputError, InternalError, PeerError, Problem, StockadeError

__all__ = ["InputError", "InternalError", "PeerError", "Problem", "StockadeError", "UsageError"]


class UsageError(StockadeError):
    """The user asked for something that cannot be done (unknown node, missing file, bad flag value).

    Unlike :class:`InputError` it is not about a manifest's content, so it names no object or
    field; its message may span lines, one problem each.
    """
