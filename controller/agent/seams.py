"""The agent's seams to the node-side parts it does not own: the applier and the CNI socket.

The applier (``controller/applier.py``, the only libnftables caller) is used through
:class:`PlanApplier`; the agent calls it from one worker thread, never concurrently. Its metric
readings are optional (:class:`ApplierReadings`): the metrics collector reads what is there.

The CNI socket server (``controller/cnisocket.py``) calls an object implementing
:class:`CniSink`; :class:`~controller.agent.loop.Agent` is one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from compiler.ir import NodePlan

RuleKey = tuple[str, str, str, int]
"""(namespace, policy, direction, rule index): one policy rule, as the rules' comments name it."""


@dataclass(frozen=True)
class RuleCounter:
    packets: int
    bytes: int


class PlanApplier(Protocol):
    """Keeps the kernel equal to a plan. Both calls are synchronous and may take milliseconds."""

    def apply(self, plan: NodePlan) -> object:
        """Make the kernel hold ``plan``; raise if it could not (the last good ruleset stays)."""
        ...

    def check(self) -> object:
        """Compare the kernel with the last applied plan and repair any drift."""
        ...


@runtime_checkable
class ApplierReadings(Protocol):
    """Readings the metrics endpoint takes from the applier when it offers them."""

    @property
    def drift_repairs(self) -> int: ...

    def rule_counters(self) -> Mapping[RuleKey, RuleCounter]: ...


@dataclass(frozen=True)
class PodReport:
    """What the CNI plugin reports about a new pod sandbox on this node."""

    uid: str
    namespace: str
    name: str
    container_id: str
    addresses: tuple[str, ...]


class CniSink(Protocol):
    async def program_pod(self, report: PodReport) -> None:
        """Return once the pod's entries are in the kernel (the caller bounds the wait)."""
        ...

    async def forget_pod(self, uid: str) -> None:
        """The pod's sandbox is gone: its reported addresses no longer count."""
        ...
