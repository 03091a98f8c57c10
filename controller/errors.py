"""Errors of the controller: the user's (bad input, an impossible request) versus our own bugs,
versus the kernel refusing what we asked of it.

The compiler's errors (:mod:`compiler.errors`) are re-exported so the controller's parts catch
and raise from one place; what the controller adds is only what the compiler cannot know about:

- :class:`UsageError`: a command line asking for something impossible (bad input);
- :class:`KernelRejected`: libnftables or the kernel refused a command (the nft error text is
  kept verbatim); the ruleset the kernel held before is still in place;
- :class:`CniProtocolError`: a message on the CNI socket that breaks the protocol (bad input
  from the peer), with the protocol's error code;
- :class:`AgentRefused`: the agent answered the CNI client with an error code;
- :class:`AgentUnavailable`: the CNI client could not get an answer from the agent in time;
- :class:`ApiError`: the API server answered the agent's own request (not kopf's) with an error
  status (the status and the server's body are kept);
- :class:`UninstallIncomplete`: ``stockade uninstall-cluster`` ran out of time (names the nodes);
- :class:`InternalError` (re-exported): a bug in Stockade.
"""

from __future__ import annotations

from compiler.errors import InputError, InternalError, PeerError, Problem, StockadeError

__all__ = [
    "AgentRefused",
    "AgentUnavailable",
    "ApiError",
    "CniProtocolError",
    "InputError",
    "InternalError",
    "KernelRejected",
    "PeerError",
    "Problem",
    "StockadeError",
    "UninstallIncomplete",
    "UsageError",
]


class UsageError(StockadeError):
    """The user asked for something that cannot be done (unknown node, missing file, bad flag value).

    Unlike :class:`InputError` it is not about a manifest's content, so it names no object or
    field; its message may span lines, one problem each.
    """


class KernelRejected(StockadeError):
    """libnftables (or the kernel behind it) refused a command batch; nothing of it was applied.

    ``nft_error`` is libnftables' error output, verbatim; ``what`` says which operation failed
    (``"full rebuild"``, ``"diff"``, ``"list"``); ``retry_in`` is set by the applier when it has
    scheduled another attempt (seconds from now).
    """

    def __init__(
        self, what: str, nft_error: str, *, commands: int = 0, retry_in: float | None = None
    ) -> None:
        self.what = what
        self.nft_error = nft_error.strip()
        self.commands = commands
        self.retry_in = retry_in
        detail = f" ({commands} commands)" if commands else ""
        super().__init__(f"nftables rejected the {what}{detail}: {self.nft_error or 'no error text'}")


class CniProtocolError(StockadeError):
    """A CNI socket message breaks the protocol; ``code`` is the protocol's error code."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


class AgentRefused(CniProtocolError):
    """The agent answered a CNI request with an error; ``supported`` lists the protocol versions
    it speaks when it refused ours."""

    def __init__(self, code: str, message: str, *, supported: tuple[int, ...] = ()) -> None:
        super().__init__(code, message)
        self.supported = supported


class AgentUnavailable(StockadeError):
    """The CNI client got no answer from the node agent (no socket, refused, or timed out)."""


class UninstallIncomplete(StockadeError):
    """``stockade uninstall-cluster`` ran out of time: the message names what was not done (which
    nodes were not cleaned); nothing it did is undone, and running it again continues."""


class ApiError(StockadeError):
    """The API server answered a request of the agent's with a status other than 2xx; ``body`` is
    the server's answer (a Status object's JSON, usually), verbatim."""

    def __init__(self, method: str, path: str, *, status: int, reason: str, body: str) -> None:
        self.status = status
        self.reason = reason
        self.body = body
        super().__init__(f"{method} {path}: {status} {reason}: {body[:500]}")
