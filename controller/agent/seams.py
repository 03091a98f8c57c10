"""The agent's seams to the node-side parts it does not own: the applier and the CNI socket.

They are written against what ``controller/applier.py`` and ``controller/cnisocket.py`` (built
in parallel) define, structurally, so neither side imports the other:

- :class:`PlanApplier`: ``Applier.apply(plan)`` returns an ``ApplyResult`` whose ``outcome`` is
  ``"deferred"`` (with ``retry_in``) when a rejected plan's backoff has not elapsed, and raises
  ``KernelRejected`` (with ``retry_in``) when the kernel refused the plan; ``check()`` repairs
  drift. The agent calls both from one worker thread, never concurrently.
- :class:`ApplierReadings`: ``drift_repairs_total`` and ``rule_counters()`` (keys with
  ``namespace``, ``policy``, ``direction``, ``index``; values with ``packets``, ``bytes``), read
  at scrape time when the applier offers them.
- :class:`CniSink`: what ``CniServer`` calls; :class:`~controller.agent.loop.Agent` is one.
  :class:`PodReport` and :class:`PodForget` mirror ``controller.cniproto``'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from compiler.ir import NodePlan


class PlanApplier(Protocol):
    """Keeps the kernel equal to a plan. Both calls are synchronous and may take milliseconds."""

    def apply(self, plan: NodePlan) -> object:
        """Make the kernel hold ``plan``; raise if it could not (the last good ruleset stays)."""
        ...

    def check(self) -> object:
        """Compare the kernel with the last applied plan and repair any drift."""
        ...


class RuleKey(Protocol):
    """One policy rule, as the rules' comments name it."""

    @property
    def namespace(self) -> str: ...
    @property
    def policy(self) -> str: ...
    @property
    def direction(self) -> str: ...
    @property
    def index(self) -> int: ...


class RuleCounts(Protocol):
    @property
    def packets(self) -> int: ...
    @property
    def bytes(self) -> int: ...


@runtime_checkable
class ApplierReadings(Protocol):
    """Readings the metrics endpoint takes from the applier when it offers them."""

    @property
    def drift_repairs_total(self) -> int: ...

    def rule_counters(self) -> Mapping[RuleKey, RuleCounts]: ...


def retry_delay(outcome: object) -> float | None:
    """When an apply's result (or error) says the plan is not in the kernel: in how many
    seconds to try again; None when it is in."""
    if isinstance(outcome, BaseException):
        delay = getattr(outcome, "retry_in", None)
        return float(delay) if isinstance(delay, int | float) else 1.0
    if getattr(outcome, "outcome", None) == "deferred":
        delay = getattr(outcome, "retry_in", None)
        return float(delay) if isinstance(delay, int | float) else 1.0
    return None


@dataclass(frozen=True)
class PodReport:
    """ADD: a sandbox of a pod on this node and the addresses the CNI plugin gave it."""

    uid: str
    namespace: str
    name: str
    container_id: str
    addresses: tuple[str, ...]


@dataclass(frozen=True)
class PodForget:
    """DEL: a sandbox that is gone; fields other than ``container_id`` may be empty."""

    container_id: str
    uid: str = ""
    namespace: str = ""
    name: str = ""


class CniSink(Protocol):
    async def program_pod(self, report: PodReport) -> None:
        """Return once the pod's entries are in the kernel (the caller bounds the wait)."""
        ...

    async def forget_pod(self, forget: PodForget) -> None:
        """The sandbox is gone: forget the addresses it reported (only that sandbox's)."""
        ...
