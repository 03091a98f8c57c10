"""A batch of changes to this node's plan. Runs in the agent's worker thread, never on the loop.

Pod churn, policy edits and namespace relabels go through
:class:`compiler.incremental.NodeCompiler` (only the pods, chains and sets they touch are
recomputed); a node change, the first batch, or a failure of the incremental path compiles the
whole model again from the snapshot taken with the batch. Either way the result equals
:func:`compiler.plan.build_plan` of the snapshot (tests/unit/test_incremental.py).

Notices (Events) are found in the whole model: after a full compile they come with it; after a
batch that changed policies or namespaces the agent asks :meth:`Engine.notices` once the plan is
in the kernel, so finding them never delays programming.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from compiler.incremental import NodeCompiler
from compiler.ir import NodePlan
from compiler.model import Namespace
from compiler.options import DEFAULT_OPTIONS, CompileOptions
from controller.agent.debounce import Batch
from controller.agent.notices import Notice, notices
from controller.agent.store import Snapshot

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Compiled:
    plan: NodePlan
    full: bool
    # What users must be told, found in the model of a full compile (None after an incremental one).
    notices: tuple[Notice, ...] | None = None
    # An incremental batch changed what notices are found from: ask Engine.notices after applying.
    review: bool = False


class Engine:
    def __init__(self, *, node: str, options: CompileOptions = DEFAULT_OPTIONS) -> None:
        self.node = node
        self.options = options
        self._compiler: NodeCompiler | None = None

    def compile(self, batch: Batch, snapshot: Snapshot) -> Compiled:
        if self._compiler is not None and not batch.rebuild:
            try:
                self._incremental(self._compiler, batch, snapshot)
                return Compiled(
                    self._compiler.plan, full=False, review=bool(batch.policies or batch.namespaces)
                )
            except Exception:
                # The incremental state is undefined after a failure: start again from the model.
                log.exception("incremental compile failed; compiling node %s in full", self.node)
        model = snapshot.model()
        self._compiler = None
        self._compiler = NodeCompiler(model, node=self.node, options=self.options)
        return Compiled(self._compiler.plan, full=True, notices=tuple(notices(model)))

    def notices(self, snapshot: Snapshot) -> tuple[Notice, ...]:
        return tuple(notices(snapshot.model()))

    @staticmethod
    def _incremental(compiler: NodeCompiler, batch: Batch, snapshot: Snapshot) -> None:
        # Namespaces are known to the compiler by name. Which incarnation of a name holds now is
        # the snapshot's answer (a namespace deleted and re-created in one batch is two UIDs).
        names = {n.metadata.name for c in batch.namespaces for n in (c.old, c.new) if n is not None}
        current: dict[str, Namespace] = {
            ns.metadata.name: ns for ns in snapshot.namespaces if ns.metadata.name in names
        }
        for name in sorted(names):
            now = current.get(name)
            if now is not None:
                compiler.update_namespace(None, now)
            else:
                gone = next(
                    n for c in batch.namespaces for n in (c.old, c.new) if n and n.metadata.name == name
                )
                compiler.update_namespace(gone, None)
        for policy in batch.policies:
            compiler.update_policy(policy.old, policy.new)
        for change in batch.pods:
            compiler.update_pod(change.old, change.new)
        for report in batch.cni:
            compiler.update_cni(report.uid, report.addresses)
        if batch.sources is not None:
            compiler.update_sources(batch.sources)
