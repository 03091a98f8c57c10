"""The one module that talks to libnftables (the ``nftables`` Python binding, pip-nftables).

Everything goes in and out as libnftables JSON (``man libnftables-json``): no nft text is ever
built, so API text (policy names in rule comments) cannot change a command's meaning. A command
list given to :meth:`Nft.run` is one netlink batch, which the kernel applies as one transaction:
all of it or none of it.

A libnftables context is not thread-safe; a lock serializes the calls on it. Listing has a
context of its own: a drift check's listing of a 10,000-pod table takes seconds on a busy node,
and an apply (a CNI ADD waiting for its pod's entries) must not wait for it; the kernel keeps the
two apart (a listing sees the ruleset before or after a transaction). Listings are serialized
process-wide, not per context (:data:`LISTING_LOCK`): libnftables 1.0.6 (Debian 12) formats a
set's concatenated type for JSON output with ``strtok(3)``, whose state is global, so two threads
listing tables with concatenated sets at once, even through two contexts, make it fail an
assertion and abort the process (upstream uses ``strtok_r`` since August 2023). Applying takes
JSON input and prints nothing, so it never waits for a listing. A context talks
to the network namespace the thread was in when it first ran a command, so an :class:`Nft` runs a
first (cheap) command on both contexts when it is created: create it in the namespace it is meant
to manage.
"""

from __future__ import annotations

import threading
from typing import Any

import nftables

from compiler.naming import FAMILY, TABLE
from controller.errors import InternalError, KernelRejected

Json = dict[str, Any]

# Held for every listing of a table in the process, by every Nft (tests run several agents in one
# process) and by anything else that lists one through its own libnftables context: see the module
# docstring. Not for the `list tables` a new Nft runs to bind its contexts: it prints no sets.
LISTING_LOCK = threading.Lock()

# What libnftables says when the object listed does not exist (errno ENOENT's text).
_NO_SUCH_OBJECT = "No such file or directory"


class Nft:
    """A libnftables context: run a JSON command batch as one transaction, list table ``inet
    stockade`` as JSON."""

    def __init__(self, *, library: str = "libnftables.so.1") -> None:
        self._lock = threading.Lock()
        self._nft = nftables.Nftables(sofile=library)
        self._nft.set_json_output(True)
        self._list_nft = nftables.Nftables(sofile=library)
        self._list_nft.set_json_output(True)
        for context in (self._nft, self._list_nft):  # bind both to this thread's namespace now
            context.json_cmd({"nftables": [{"list": {"tables": {"family": FAMILY}}}]})

    def run(self, doc: Json, *, what: str) -> None:
        """Run ``{"nftables": [...]}`` as one transaction; raises :class:`KernelRejected` with
        libnftables' error text when any command fails (then none took effect)."""
        commands = doc.get("nftables")
        if not isinstance(commands, list):
            raise InternalError(f"nft.run({what}): not a libnftables document: {str(doc)[:200]}")
        if not any(not _is_metainfo(c) for c in commands):
            return
        with self._lock:
            rc, _, error = self._nft.json_cmd(doc)
        if rc != 0:
            raise KernelRejected(what, str(error), commands=len(commands))

    def list_table(self) -> Json | None:
        """``nft -j list table inet stockade`` as a document, or None when there is no such table."""
        query = {"nftables": [{"list": {"table": {"family": FAMILY, "name": TABLE}}}]}
        with LISTING_LOCK:
            rc, output, error = self._list_nft.json_cmd(query)
        if rc != 0:
            if _NO_SUCH_OBJECT in str(error):
                return None
            raise KernelRejected("listing of table inet stockade", str(error))
        if not isinstance(output, dict) or not isinstance(output.get("nftables"), list):
            raise InternalError(f"libnftables listed something that is not a document: {str(output)[:200]}")
        return output


def _is_metainfo(command: Any) -> bool:
    return isinstance(command, dict) and set(command) == {"metainfo"}
