"""A batch of changes to this node's plan. Runs in the agent's worker thread, never on the loop.

Pod churn goes through :class:`compiler.incremental.NodeCompiler` (set elements and map entries
only); a policy, namespace or node change, the first batch, or a failure of the incremental path
compiles the whole model again from the snapshot taken with the batch. Either way the result
equals :func:`compiler.plan.build_plan` of the snapshot (tests/unit/test_incremental.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from compiler.incremental import NodeCompiler
from compiler.ir import NodePlan
from controller.agent.debounce import Batch
from controller.agent.notices import Notice, notices
from controller.agent.store import Snapshot

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Compiled:
    plan: NodePlan
    full: bool
    # What users must be told, found in the model of a full compile (None after pod churn only).
    notices: tuple[Notice, ...] | None = None


class Engine:
    def __init__(self, *, node: str) -> None:
        self.node = node
        self._compiler: NodeCompiler | None = None

    def compile(self, batch: Batch, snapshot: Snapshot) -> Compiled:
        if self._compiler is not None and not batch.rebuild:
            try:
                for change in batch.pods:
                    self._compiler.update_pod(change.old, change.new)
                for report in batch.cni:
                    self._compiler.update_cni(report.uid, report.addresses)
                return Compiled(self._compiler.plan, full=False)
            except Exception:
                # The incremental state is undefined after a failure: start again from the model.
                log.exception("incremental compile failed; compiling node %s in full", self.node)
        model = snapshot.model()
        self._compiler = None
        self._compiler = NodeCompiler(model, node=self.node)
        return Compiled(self._compiler.plan, full=True, notices=tuple(notices(model)))
