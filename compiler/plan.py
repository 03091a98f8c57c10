"""The per-node plan: what table ``inet stockade`` must hold on one node.

:func:`build_plan` is the whole compile of a cluster model for a node. The plan is made of the
frozen values of :mod:`compiler.ir` and rendered by
:func:`compiler.render_json.render_json` and :func:`compiler.render_nft.render_nft`.

The data plane it describes (see DESIGN.md, "Data plane"):

- Pods are identified by address only, never by interface name, so a plan compiled offline
  works on any node that routes pods the Stockade way (a /32 and /128 per pod to its veth).
- Pod interfaces are recognized by name prefix only (``stk*``, a compile option), to scope the
  host-wide checks to pod traffic. ``prerouting`` drops spoofed sources from pod interfaces
  (strict reverse path). ``forward`` and ``input`` accept replies, then drop unknown addresses
  of the node's podCIDRs (fail closed), then dispatch in O(1) through verdict maps keyed by
  local pod address: the source's egress chain first (allow rules return), then the
  destination's ingress chain (allow rules accept).
- Pods that no policy isolates map to ``continue`` (egress) and ``accept`` (ingress).
- Peers are named sets shared by every rule with the same selector, filled with the addresses
  of the matching pods cluster-wide; ipBlocks are interval sets; egress to named ports uses
  (address . protocol . port) sets. Sets are declared even when empty: pod churn fills them.
"""

from __future__ import annotations

from compiler.cluster import ClusterModel
from compiler.ir import NodePlan
from compiler.nodestate import NodeState
from compiler.options import DEFAULT_OPTIONS, CompileOptions


def build_plan(model: ClusterModel, *, node: str, options: CompileOptions = DEFAULT_OPTIONS) -> NodePlan:
    """The plan for ``node``. An unknown node, or one without podCIDRs, still compiles (without
    fail-closed rules) and says so in ``plan.notes``. ``options`` say how the node names pod
    interfaces (see :mod:`compiler.options`)."""
    return NodeState(model, node=node, options=options).snapshot()
