"""The node's compiled state as a NodePlan: frozen, sorted, the same for the same state.

The plan's order is fixed (sets by name, per-pod chains by name, local pods by key) so that the
same model gives byte-identical output however the state was reached: by one full compile or by
any sequence of pod events (:mod:`compiler.incremental`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from compiler import naming
from compiler.chainstore import ChainStore
from compiler.dispatch import Dispatch
from compiler.ir import DIRECTIONS, FAMILIES, Chain, IfnameAddrSet, IntervalSet, NodePlan, PlanSet
from compiler.model import Family
from compiler.peersets import Span, intervals


def node_plan(
    *,
    node: str,
    base: tuple[Chain, ...],
    tiers: tuple[Chain, ...],
    store: ChainStore,
    dispatch: Dispatch,
    cidrs: Mapping[Family, Sequence[Span]],
    sources: Sequence[IfnameAddrSet],
    notes: tuple[str, ...],
) -> NodePlan:
    sets: list[PlanSet] = [store.plan_set(name) for name in store.specs]
    sets += [dispatch.local_set(f) for f in FAMILIES]
    sets += [dispatch.hairpin_set(f) for f in FAMILIES]
    sets += sources  # declared even when empty: the prerouting rules name them
    for family in FAMILIES:
        if cidrs[family]:
            spans = intervals(cidrs[family], family)
            sets.append(IntervalSet(naming.podcidr_set(family), family, spans, "this node's podCIDRs"))
    chains = store.chains
    return NodePlan(
        node=node,
        base_chains=base,
        tier_chains=tiers,
        pod_chains=tuple(chains[n] for n in sorted(chains)),
        sets=tuple(sorted(sets, key=lambda s: s.name)),
        maps=tuple(dispatch.plan_map(d, f) for d in DIRECTIONS for f in FAMILIES),
        local_pods=dispatch.local_pods(),
        notes=notes,
    )
