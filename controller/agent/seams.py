"""The agent's seams to the node-side parts it does not own: the applier and the CNI socket.

- :class:`PlanApplier`: what the agent needs of :class:`controller.applier.Applier` (tests pass
  a recording double of the kernel side). ``apply(plan)`` returns an ``ApplyResult`` whose
  ``outcome`` is ``"deferred"`` (with ``retry_in``) while a refused plan's backoff has not
  elapsed, and raises ``KernelRejected`` (with ``retry_in``) when the kernel refused the plan;
  ``check()`` repairs drift. The agent calls both from one worker thread, never concurrently.
- :class:`ApplierReadings`: ``drift_repairs_total`` and ``rule_counters()``, read at scrape time
  when the applier offers them (the Applier does).
- :class:`PodSourceReader`: the (pod interface, address) pairs the node's routing table routes,
  for the anti-spoofing fast path (:class:`controller.podroutes.RoutedSources` reads them with
  netlink; tests pass a double). Both calls block; the agent makes them off the event loop.
- The CNI socket (:class:`controller.cnisocket.CniServer`) calls ``program_pod(PodReport)`` and
  ``forget_pod(PodForget)`` (:mod:`controller.cniproto`); :class:`~controller.agent.loop.Agent`
  implements both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol, runtime_checkable

from compiler.cluster import PodSource
from compiler.ir import NodePlan
from controller.applier import ApplyResult
from controller.cniproto import PodForget, PodReport
from controller.errors import KernelRejected

__all__ = ["ApplierReadings", "PlanApplier", "PodForget", "PodReport", "PodSourceReader", "retry_delay"]


class PlanApplier(Protocol):
    """Keeps the kernel equal to a plan. Both calls are synchronous and may take milliseconds."""

    def apply(self, plan: NodePlan) -> object:
        """Make the kernel hold ``plan``; raise if it could not (the last good ruleset stays)."""
        ...

    def check(self) -> object:
        """Compare the kernel with the last applied plan and repair any drift."""
        ...


class PodSourceReader(Protocol):
    """The node's routed pod sources: only ever pairs the routing table holds now."""

    def all(self) -> frozenset[PodSource]:
        """Every (pod interface, address) the node routes."""
        ...

    def of(self, addresses: Iterable[str]) -> frozenset[PodSource]:
        """The pairs of these addresses only (none for an address not routed to a pod interface)."""
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
    seconds to try again (as the applier scheduled it, else a second); None when it is in."""
    if isinstance(outcome, KernelRejected | ApplyResult):
        if isinstance(outcome, ApplyResult) and outcome.outcome != "deferred":
            return None
        return outcome.retry_in if outcome.retry_in is not None else 1.0
    if isinstance(outcome, BaseException):
        return 1.0
    return None
