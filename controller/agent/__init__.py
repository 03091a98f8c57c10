"""The node agent: watches the cluster (kopf), compiles this node's plan, hands it to the applier.

Parts, one job each: :mod:`.objects` (API bodies to compiler models), :mod:`.store` (the objects
by UID, and what each event changes), :mod:`.debounce` (bursts into batches), :mod:`.engine`
(a batch to a plan, off the event loop), :mod:`.loop` (the agent's main loop: compile, apply,
readiness, CNI waiters), :mod:`.notices` (what users must be told), :mod:`.apiclient`
(credentials and a small REST client: no ``kubernetes`` package), :mod:`.kube` (API access:
listings, Events, kube-proxy mode), :mod:`.metrics` and :mod:`.http` (endpoints),
:mod:`.operator` (kopf wiring), :mod:`.seams` (what the agent needs from the applier and
offers the CNI socket) and :mod:`.main` (``stockade agent``: the applier, the CNI socket, run).
"""
