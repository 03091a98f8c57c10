"""Test support: the network-namespace lab, the pod agent and the prober.

- `addressing`: pod addresses (dual-stack, same host id in both families), CIDR helpers.
- `netlab`: `NetLab`, a node netns plus one netns per pod, routed like Stockade's CNI.
- `podagent`: the program run inside each pod: serves TCP/UDP/SCTP, probes on request.
- `agents`: start/stop pod agents in any netns (used by NetLab and by the cluster lab).
- `probe`: `Prober` (concurrent probes through the agents) and reachability tables.
- `sctp`: INIT / INIT-ACK / ABORT over raw sockets, CRC32c.
- `conformance`: the upstream e2e cases as cluster models for the lab.
- `policies`: hypothesis strategies for random valid models over the lab's pods.

Used by the kernel tier (`tests/kernel/`) and by the cluster lab (`tests/cluster/`).
"""
