"""The node stand-in: what kubelet and the container runtime would do on one lab node.

Runs inside the node's network namespace (`python -m tests.cluster.lab.standin ...`), as
`system:node:<name>`, so the apiserver's Node authorizer and NodeRestriction apply as to a
real kubelet. It
- registers the Node (InternalIPs, capacity) and keeps it alive: renews its Lease in
  kube-node-lease and reports Ready once the node's CNI config dir names a network;
- watches the pods bound to it and, for each, creates a sandbox (netns + CNI ADD + pod
  agent on the declared ports) and reports the pod Running with its IPs and Ready;
- completes run-to-completion pods (restartPolicy Never/OnFailure) after a short run;
- on deletion: tears the sandbox down (agent, CNI DEL, netns) and deletes the pod object
  with grace period 0, as kubelet does.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from .kube import MERGE, ApiError, Credentials, Kube, Obj, now_rfc3339
from .sandbox import Sandbox, Sandboxes
from .workqueue import WorkQueue

log = logging.getLogger("standin")

LEASE_SECONDS = 40
RENEW_EVERY = 10.0
STATUS_EVERY = 60.0
RUN_SECONDS_ANNOTATION = "lab.stockade.io/run-seconds"
DEFAULT_RUN_SECONDS = 2.0
CAPACITY = {"cpu": "8", "memory": "16Gi", "pods": "110", "ephemeral-storage": "50Gi"}
POD_CONDITIONS = ("PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready", "PodScheduled")


class StandIn:
    def __init__(self, args: argparse.Namespace) -> None:
        self.node: str = args.node
        self.ips: list[str] = [args.ipv4, args.ipv6]
        self.lab: str = args.lab
        self.kube = Kube(Credentials(server=args.server, ca=args.ca, cert=args.cert, key=args.key))
        node_dir = Path(args.node_dir)
        self.boxes = Sandboxes(
            node_dir=node_dir,
            lab_prefix=args.netns_prefix,
            conf_dir=Path(args.cni_conf_dir),
            cni_path=args.cni_path,
            node_netns=args.netns,
        )
        self.pods: dict[str, Obj] = {}  # uid -> latest pod seen
        self.sandboxes: dict[str, Sandbox] = {}  # uid -> running sandbox
        self.finish_at: dict[str, float] = {}  # uid -> when a run-to-completion pod succeeds
        self.deleted: set[str] = set()  # uids we already deleted (finalizers may keep them a while)
        self.reported: set[str] = set()  # uids whose Running status is written
        # uids we completed: an older event still saying Running must not start them again
        self.completed: dict[str, Sandbox] = {}
        self.lock = threading.Lock()
        self.queue = WorkQueue(self.reconcile, workers=4)
        self.stop = threading.Event()
        self.ready = False
        self.ready_since = now_rfc3339()

    # --- node ----------------------------------------------------------------------------------

    def _node_status(self) -> Obj:
        now = now_rfc3339()
        ready = {
            "type": "Ready",
            "status": "True" if self.ready else "False",
            "reason": "KubeletReady" if self.ready else "NetworkPluginNotReady",
            "message": "stockade lab node stand-in is posting ready status"
            if self.ready
            else "no CNI network config in the node's CNI config dir",
            "lastHeartbeatTime": now,
            "lastTransitionTime": self.ready_since,
        }
        pressure = [
            {
                "type": t,
                "status": "False",
                "reason": f"KubeletHas{r}",
                "lastHeartbeatTime": now,
                "lastTransitionTime": self.ready_since,
            }
            for t, r in (
                ("MemoryPressure", "SufficientMemory"),
                ("DiskPressure", "NoDiskPressure"),
                ("PIDPressure", "SufficientPID"),
            )
        ]
        return {"conditions": [*pressure, ready]}

    def register(self) -> None:
        self.ready = self.boxes.network_ready()
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node,
                "labels": {
                    "kubernetes.io/hostname": self.node,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "lab.stockade.io/lab": self.lab,
                },
            },
            "status": {
                **self._node_status(),
                "addresses": [{"type": "InternalIP", "address": ip} for ip in self.ips]
                + [{"type": "Hostname", "address": self.node}],
                "capacity": CAPACITY,
                "allocatable": CAPACITY,
                "nodeInfo": {
                    "kubeletVersion": "v1.37.2",
                    "operatingSystem": "linux",
                    "architecture": "amd64",
                    "containerRuntimeVersion": "stockade-lab://1",
                    "kernelVersion": os.uname().release,
                    "osImage": "Stockade lab node stand-in",
                    "machineID": "",
                    "systemUUID": "",
                    "bootID": "",
                    "kubeProxyVersion": "",
                },
            },
        }
        try:
            self.kube.create("/api/v1/nodes", body)
        except ApiError as exc:
            if exc.status != 409:
                raise
            self.kube.patch(f"/api/v1/nodes/{self.node}/status", {"status": body["status"]})
        log.info("registered node %s (%s), network ready: %s", self.node, ", ".join(self.ips), self.ready)

    def heartbeat(self) -> None:
        """Lease renewals and Ready reporting, as kubelet's node status loop."""
        node_uid = ""
        lease_path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.node}"
        last_status = 0.0
        while not self.stop.is_set():
            try:
                node_uid = node_uid or str(self.kube.get(f"/api/v1/nodes/{self.node}")["metadata"]["uid"])
                spec = {
                    "holderIdentity": self.node,
                    "leaseDurationSeconds": LEASE_SECONDS,
                    "renewTime": now_rfc3339(micro=True),
                }
                try:
                    self.kube.patch(lease_path, {"spec": spec}, kind=MERGE)
                except ApiError as exc:
                    if exc.status != 404:
                        raise
                    self.kube.create(
                        "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                        {
                            "metadata": {
                                "name": self.node,
                                "namespace": "kube-node-lease",
                                "ownerReferences": [
                                    {"apiVersion": "v1", "kind": "Node", "name": self.node, "uid": node_uid}
                                ],
                            },
                            "spec": spec,
                        },
                    )
                ready = self.boxes.network_ready()
                if ready != self.ready or time.monotonic() - last_status > STATUS_EVERY:
                    if ready != self.ready:
                        self.ready, self.ready_since = ready, now_rfc3339()
                        log.info("node ready: %s", ready)
                        for uid in list(self.pods):  # pods that waited for the network
                            self.queue.add(uid)
                    self.kube.patch(f"/api/v1/nodes/{self.node}/status", {"status": self._node_status()})
                    last_status = time.monotonic()
            except (ApiError, OSError) as exc:
                log.warning("heartbeat: %s", exc)
            self.stop.wait(RENEW_EVERY if self.ready else 1.0)

    # --- pods ----------------------------------------------------------------------------------

    def watch_pods(self) -> None:
        selector = {"fieldSelector": f"spec.nodeName={self.node}"}
        while not self.stop.is_set():
            try:
                listing = self.kube.get("/api/v1/pods", **selector)
                seen = {p["metadata"]["uid"]: p for p in listing["items"]}
                with self.lock:
                    gone = set(self.pods) - set(seen)
                    self.pods = seen
                for uid in [*seen, *gone]:
                    self.queue.add(uid)
                rv = listing["metadata"]["resourceVersion"]
                for event in self.kube.watch("/api/v1/pods", resource_version=rv, query=selector):
                    if self.stop.is_set():
                        return
                    kind, obj = event["type"], event["object"]
                    if kind == "ERROR":
                        break  # e.g. 410 Gone: re-list
                    if kind == "BOOKMARK":
                        continue
                    uid = obj["metadata"]["uid"]
                    with self.lock:
                        if kind == "DELETED":
                            self.pods.pop(uid, None)
                        else:
                            self.pods[uid] = obj
                    self.queue.add(uid)
            except (ApiError, OSError, ValueError) as exc:
                log.warning("pod watch: %s; re-listing", exc)
                self.stop.wait(1.0)
            except Exception:  # a bug must not leave the node without a watch: log it, re-list
                log.exception("pod watch failed; re-listing")
                self.stop.wait(1.0)

    def reconcile(self, uid: str) -> float | None:
        """Bring one pod's sandbox and status in line; returns a delay to look again, or None."""
        with self.lock:
            pod = self.pods.get(uid)
        sb = self.sandboxes.get(uid)
        if pod is None or pod["metadata"].get("deletionTimestamp"):
            if sb is not None:
                self._teardown(sb)
            if pod is not None and uid not in self.deleted:
                self._delete(pod)
            if pod is None:
                self.completed.pop(uid, None)
                self.deleted.discard(uid)
                self.reported.discard(uid)
                self.finish_at.pop(uid, None)
            return None
        phase = pod.get("status", {}).get("phase")
        if uid in self.completed:
            if phase != "Succeeded":  # our report failed, or this event predates it
                self._report_succeeded(pod, self.completed[uid])
            return None
        if phase in ("Succeeded", "Failed"):
            if sb is not None:
                self._teardown(sb)
            return None
        if sb is None:
            if not pod["spec"].get("hostNetwork") and not self.boxes.network_ready():
                return 2.0  # like kubelet: no sandbox until the network plugin is ready
            sb = self.boxes.setup(pod, host_ips=self.ips)
            self.sandboxes[uid] = sb
            if pod["spec"].get("restartPolicy", "Always") != "Always":
                annotations = pod["metadata"].get("annotations", {})
                run = float(annotations.get(RUN_SECONDS_ANNOTATION, DEFAULT_RUN_SECONDS))
                self.finish_at[uid] = time.monotonic() + run
        if uid not in self.reported:
            self._report_running(pod, sb)
            self.reported.add(uid)
            log.info("pod %s running: %s", sb.key, ", ".join(sb.ips))
        if uid in self.finish_at:
            left = self.finish_at[uid] - time.monotonic()
            if left > 0:
                return left
            self._teardown(sb)
            self.completed[uid] = sb
            self.finish_at.pop(uid, None)
            self._report_succeeded(pod, sb)
            log.info("pod %s succeeded", sb.key)
        return None

    def _teardown(self, sb: Sandbox) -> None:
        self.boxes.teardown(sb)
        self.sandboxes.pop(sb.uid, None)
        self.reported.discard(sb.uid)
        log.info("pod %s sandbox removed", sb.key)

    def _delete(self, pod: Obj) -> None:
        meta = pod["metadata"]
        try:
            self.kube.delete(
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}},
            )
        except ApiError as exc:
            if exc.status not in (404, 409):
                raise
        self.deleted.add(meta["uid"])

    def _status_path(self, pod: Obj) -> str:
        return f"/api/v1/namespaces/{pod['metadata']['namespace']}/pods/{pod['metadata']['name']}/status"

    def _report_running(self, pod: Obj, sb: Sandbox) -> None:
        now = now_rfc3339()
        status: dict[str, Any] = {
            "phase": "Running",
            "hostIP": self.ips[0],
            "hostIPs": [{"ip": ip} for ip in self.ips],
            "podIP": sb.ips[0],
            "podIPs": [{"ip": ip} for ip in sb.ips],
            "startTime": now,
            "conditions": [{"type": t, "status": "True", "lastTransitionTime": now} for t in POD_CONDITIONS],
            "containerStatuses": [
                {
                    "name": c["name"],
                    "image": c.get("image", ""),
                    "imageID": "",
                    "containerID": f"stockade-lab://{sb.uid}/{c['name']}",
                    "ready": True,
                    "started": True,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": now}},
                }
                for c in pod["spec"]["containers"]
            ],
        }
        self.kube.patch(self._status_path(pod), {"status": status})

    def _report_succeeded(self, pod: Obj, sb: Sandbox) -> None:
        now = now_rfc3339()
        done = {"exitCode": 0, "reason": "Completed", "startedAt": sb.started_at, "finishedAt": now}
        conditions = [
            {"type": t, "status": "False", "reason": "PodCompleted", "lastTransitionTime": now}
            for t in ("Ready", "ContainersReady", "PodReadyToStartContainers")
        ]
        status = {
            "phase": "Succeeded",
            "conditions": conditions,
            "containerStatuses": [
                {
                    "name": c["name"],
                    "image": c.get("image", ""),
                    "imageID": "",
                    "containerID": f"stockade-lab://{sb.uid}/{c['name']}",
                    "ready": False,
                    "started": False,
                    "restartCount": 0,
                    "state": {"terminated": done},
                }
                for c in pod["spec"]["containers"]
            ],
        }
        self.kube.patch(self._status_path(pod), {"status": status})

    # --- main ----------------------------------------------------------------------------------

    def run(self) -> None:
        # Sandboxes left by an earlier run of this stand-in: their agents died with it.
        for sb in self.boxes.recorded():
            log.info("removing stale sandbox of %s", sb.key)
            self.boxes.teardown(sb)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.register()
                break
            except (ApiError, OSError) as exc:
                if time.monotonic() > deadline:
                    raise
                log.warning("registering the node: %s; retrying", exc)
                time.sleep(1.0)
        threading.Thread(target=self.heartbeat, name="heartbeat", daemon=True).start()
        self.queue.start()
        threading.Thread(target=self.watch_pods, name="pod-watch", daemon=True).start()
        # The main thread only waits, so a SIGTERM is handled at once (a signal interrupts this
        # wait; it would not interrupt another thread's blocking read of the watch stream).
        while not self.stop.wait(3600):
            pass

    def shutdown(self) -> None:
        # Like kubelet, leave the pods as they are: the agents exit with us (PDEATHSIG) and the
        # lab's clean-up removes the recorded sandboxes; a restarted stand-in removes them too.
        self.stop.set()
        self.queue.stop()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="standin", description="Stockade lab node stand-in (kubelet + runtime)")
    for flag in (
        "lab",
        "node",
        "netns",
        "ipv4",
        "ipv6",
        "server",
        "ca",
        "cert",
        "key",
        "node-dir",
        "netns-prefix",
        "cni-conf-dir",
        "cni-path",
    ):
        p.add_argument(f"--{flag}", required=True)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stand_in = StandIn(args)

    def on_term(signum: int, frame: object) -> None:
        # Nothing to save: leave at once (blocked watch reads and worker threads would otherwise
        # hold up the interpreter's exit), and the pod agents follow via PDEATHSIG.
        log.info("SIGTERM: exiting")
        logging.shutdown()
        os._exit(0)

    signal.signal(signal.SIGTERM, on_term)
    try:
        stand_in.run()
    finally:
        stand_in.shutdown()


if __name__ == "__main__":
    main()
