"""``stockade-cni``: the commands of the CNI spec (1.1), as the container runtime calls them.

The runtime sets ``CNI_COMMAND`` (and, per command, ``CNI_CONTAINERID``, ``CNI_NETNS``,
``CNI_IFNAME``, ``CNI_ARGS``), writes the network configuration on stdin and reads a result
(ADD), version information (VERSION) or nothing (DEL, CHECK, GC, STATUS) on stdout; a failure
is a spec error object on stdout and a non-zero exit. Notes for people go to stderr.

``stockade-cni install ...`` runs the installer instead (:mod:`controller.cni.install`).

Imports are deferred to the command that needs them: VERSION loads nothing beyond the standard
library, and no command loads the compiler, kopf or kubernetes.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from controller.cni import config
from controller.cni.config import Attachment, CniEnv, NetConf
from controller.cni.errors import (
    AGENT_REFUSED,
    CHECK_FAILED,
    INTERNAL,
    NOT_AVAILABLE,
    TRY_AGAIN_LATER,
    CniError,
)

if TYPE_CHECKING:
    from controller.cni.ipam import Ipam
    from controller.cniclient import Pending


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["install"]:
        from controller.cni.install import main as install  # noqa: PLC0415 - only the installer needs it

        return install(args[1:])
    data = sys.stdin.buffer.read()
    version = config.version_of(data)
    command = os.environ.get("CNI_COMMAND")
    if command in ("ADD", "DEL", "CHECK", "GC"):
        _light_pyroute2()
        if command != "ADD":
            _load_netlink()  # ADD loads it only once the pod is reported to the agent
    try:
        output = run(dict(os.environ), data)
    except CniError as exc:
        print(f"stockade-cni: {exc}", file=sys.stderr)
        sys.stdout.write(exc.to_json(version) + "\n")
        return 1
    except Exception as exc:  # a bug: still answer with an error object the runtime can show
        error = CniError(INTERNAL, f"stockade-cni failed unexpectedly: {type(exc).__name__}: {exc}")
        print(f"stockade-cni: {error}", file=sys.stderr)
        sys.stdout.write(error.to_json(version) + "\n")
        return 1
    if output is not None:
        sys.stdout.write(json.dumps(output) + "\n")
    return 0


def _light_pyroute2() -> None:
    """Let ``import pyroute2.<module>`` skip pyroute2's package ``__init__``, which imports every
    pyroute2 module (conntrack, NDB, IPVS, WiFi, ...) and is most of an ADD's start-up time; the
    plugin needs only the RTNL message classes (:mod:`controller.cni.rtnl`). Done only here, in
    the plugin's own short-lived process: a long-running process (the agent, tests) imports
    pyroute2 normally. If pyroute2's layout ever changes, the normal import is used."""
    import importlib.util  # noqa: PLC0415
    import types  # noqa: PLC0415

    if "pyroute2" in sys.modules:
        return
    spec = importlib.util.find_spec("pyroute2")
    if spec is None or not spec.submodule_search_locations:
        return
    package = types.ModuleType("pyroute2")
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    package.__file__ = spec.origin
    sys.modules["pyroute2"] = package


def _load_netlink() -> None:
    """Import the plugin's netlink module (:mod:`controller.cni.rtnl`), through the light package
    when :func:`_light_pyroute2` put it in place; if pyroute2's layout ever changes so that it
    does not load that way, the normal import is used."""
    try:
        import controller.cni.rtnl  # noqa: PLC0415 - all the plugin imports of pyroute2
    except ImportError:
        for name in [m for m in sys.modules if m == "pyroute2" or m.startswith("pyroute2.")]:
            del sys.modules[name]
        sys.modules.pop("controller.cni.rtnl", None)
        import controller.cni.rtnl  # noqa: PLC0415, F401


def run(environ: Mapping[str, str], data: bytes) -> dict[str, Any] | None:
    env = config.parse_env(dict(environ))
    if env.command == "VERSION":
        return {"cniVersion": config.version_of(data), "supportedVersions": list(config.SUPPORTED_VERSIONS)}
    conf = config.parse_netconf(data, command=env.command)
    if env.command == "ADD":
        return cmd_add(env, conf)
    if env.command == "DEL":
        cmd_del(env, conf)
    elif env.command == "CHECK":
        cmd_check(env, conf)
    elif env.command == "GC":
        cmd_gc(conf)
    else:
        cmd_status(conf)
    return None


def _ipam(conf: NetConf) -> Ipam:
    from controller.cni.ipam import Ipam  # noqa: PLC0415

    return Ipam(conf.ipam_dir, conf.name, conf.pod_cidrs, quarantine=conf.quarantine_seconds)


def cmd_add(env: CniEnv, conf: NetConf) -> dict[str, Any]:
    from compiler.ifnames import pod_interface  # noqa: PLC0415 - import-free module
    from controller.cni.netns import verify_netns  # noqa: PLC0415 - without pyroute2

    owner = Attachment(container_id=env.container_id, ifname=env.ifname)
    host_ifname = pod_interface(env.container_id, env.ifname)
    verify_netns(env.netns)  # a missing sandbox fails here, before anything is allocated
    ipam = _ipam(conf)
    with ipam.locked():
        reused = bool(ipam.owned_by(owner))
        allocations = ipam.allocate(owner)
    addresses = [a.address for a in allocations]
    pending: Pending | None = None
    try:
        # The report goes first: the agent programs the pod (it needs only the addresses) while
        # pyroute2 is imported and the links are made here; ADD returns once both are done.
        pending = _report(env, conf, [str(a) for a in addresses])
        _load_netlink()
        from controller.cni import links, result  # noqa: PLC0415
        from controller.cni.rtnl import Rtnl  # noqa: PLC0415

        with Rtnl() as ipr:
            try:
                links.remove_host_link(ipr, host_ifname)  # left by a crash mid-ADD of this attachment
                mtu = conf.mtu or links.default_mtu(ipr)
                link = links.create(
                    ipr,
                    host_ifname=host_ifname,
                    pod_ifname=env.ifname,
                    netns_path=env.netns,
                    addresses=addresses,
                    mtu=mtu,
                )
                if pending is not None:
                    _await_agent(pending, env)
            except BaseException:
                links.remove_host_link(ipr, host_ifname)
                raise
    except BaseException:
        try:
            if pending is not None:  # it may have recorded the addresses, programmed or refused
                pending.close()
                _forget(conf, env.container_id, env)
        finally:
            with ipam.locked():
                # Addresses this ADD took were never used: free at once. Ones held before (an
                # earlier, crashed ADD) may have carried traffic: quarantined.
                ipam.release(owner, quarantine=reused)
        raise
    return result.build(conf.cni_version, link=link, allocations=allocations, mtu=mtu, prev=conf.prev_result)


def _report(env: CniEnv, conf: NetConf, addresses: list[str]) -> Pending | None:
    """Policy before the first packet: send the agent the pod's addresses; the answer (the pod is
    programmed) is awaited by :func:`_await_agent` before ADD returns. None: nobody to wait for."""
    if not conf.wait_for_agent:
        return None
    from controller import cniclient  # noqa: PLC0415
    from controller.cniproto import PodReport  # noqa: PLC0415
    from controller.errors import AgentUnavailable  # noqa: PLC0415

    namespace, name, uid = (env.arg(k) for k in ("K8S_POD_NAMESPACE", "K8S_POD_NAME", "K8S_POD_UID"))
    if not (namespace and name and uid):
        print(
            "stockade-cni: CNI_ARGS has no K8S_POD_NAMESPACE/K8S_POD_NAME/K8S_POD_UID: not a Kubernetes "
            "pod, the agent is not asked",
            file=sys.stderr,
        )
        return None
    report = PodReport(
        uid=uid, namespace=namespace, name=name, container_id=env.container_id, addresses=tuple(addresses)
    )
    try:
        return cniclient.send(report, path=conf.agent_socket, timeout=conf.agent_timeout)
    except AgentUnavailable as exc:
        _without_agent(exc)
        return None


def _await_agent(pending: Pending, env: CniEnv) -> None:
    from controller.cniproto import TIMEOUT  # noqa: PLC0415
    from controller.errors import AgentRefused, AgentUnavailable  # noqa: PLC0415

    try:
        pending.wait()
    except AgentUnavailable as exc:
        _without_agent(exc)
    except AgentRefused as exc:
        code = TRY_AGAIN_LATER if exc.code == TIMEOUT else AGENT_REFUSED
        pod = f"{env.arg('K8S_POD_NAMESPACE')}/{env.arg('K8S_POD_NAME')}"
        raise CniError(
            code, f"the Stockade agent could not program pod {pod}: {exc.message}", exc.code
        ) from exc


def _without_agent(exc: Exception) -> None:
    # No agent (yet), or no answer in time: the pod starts anyway; the fail-closed rules keep its
    # podCIDR address unreachable until the agent programs it.
    print(f"stockade-cni: proceeding without the agent: {exc}", file=sys.stderr)


def _forget(conf: NetConf, container_id: str, env: CniEnv | None = None) -> None:
    """Best effort: tell the agent the sandbox is gone (it also learns it from the API)."""
    if not conf.wait_for_agent:
        return
    from controller import cniclient  # noqa: PLC0415
    from controller.cniproto import PodForget  # noqa: PLC0415
    from controller.errors import AgentRefused, AgentUnavailable  # noqa: PLC0415

    forget = PodForget(
        container_id=container_id,
        uid=env.arg("K8S_POD_UID") if env else "",
        namespace=env.arg("K8S_POD_NAMESPACE") if env else "",
        name=env.arg("K8S_POD_NAME") if env else "",
    )
    try:
        cniclient.del_pod(forget, path=conf.agent_socket, timeout=min(conf.agent_timeout, 1.0))
    except (AgentUnavailable, AgentRefused) as exc:
        print(f"stockade-cni: the agent was not told of DEL {container_id[:12]}: {exc}", file=sys.stderr)


def cmd_del(env: CniEnv, conf: NetConf) -> None:
    """Idempotent: whatever is already gone is not an error."""
    from compiler.ifnames import pod_interface  # noqa: PLC0415
    from controller.cni import links  # noqa: PLC0415
    from controller.cni.rtnl import Rtnl  # noqa: PLC0415

    with Rtnl() as ipr:
        links.remove_host_link(ipr, pod_interface(env.container_id, env.ifname))
    ipam = _ipam(conf)
    with ipam.locked():
        ipam.release(Attachment(container_id=env.container_id, ifname=env.ifname))
    _forget(conf, env.container_id, env)


def cmd_check(env: CniEnv, conf: NetConf) -> None:
    from compiler.ifnames import pod_interface  # noqa: PLC0415
    from controller.cni import links, result  # noqa: PLC0415
    from controller.cni.rtnl import Rtnl  # noqa: PLC0415

    owner = Attachment(container_id=env.container_id, ifname=env.ifname)
    ipam = _ipam(conf)
    with ipam.locked():
        allocations = ipam.owned_by(owner)
    if not allocations:
        raise CniError(CHECK_FAILED, f"no addresses are allocated to {env.container_id[:12]}/{env.ifname}")
    problems = []
    if conf.prev_result is not None:
        listed = result.addresses_in(conf.prev_result)
        problems += [
            f"prevResult does not list {a.address}" for a in allocations if str(a.address) not in listed
        ]
    with Rtnl() as ipr:
        problems += links.check(
            ipr,
            host_ifname=pod_interface(env.container_id, env.ifname),
            pod_ifname=env.ifname,
            netns_path=env.netns,
            addresses=[a.address for a in allocations],
        )
    if problems:
        raise CniError(CHECK_FAILED, "; ".join(problems))


def cmd_gc(conf: NetConf) -> None:
    """Release what no valid attachment owns: addresses, and the veth pairs left with them."""
    from compiler.ifnames import IFNAME_MAX, POD_INTERFACE_PREFIX, pod_interface  # noqa: PLC0415
    from controller.cni import links  # noqa: PLC0415
    from controller.cni.rtnl import Rtnl  # noqa: PLC0415

    # Only names pod_interface makes: another tool's "stk..." link is never touched.
    hex_digits = IFNAME_MAX - len(POD_INTERFACE_PREFIX)
    pod_link = re.compile(rf"^{re.escape(POD_INTERFACE_PREFIX)}[0-9a-f]{{{hex_digits}}}$")
    valid = conf.valid_attachments or ()
    ipam = _ipam(conf)
    with ipam.locked():
        released = ipam.gc(valid)
    keep = {pod_interface(a.container_id, a.ifname) for a in valid}
    with Rtnl() as ipr:
        for link in ipr.get_links():
            name = link.get_attr("IFLA_IFNAME") or ""
            info = link.get_attr("IFLA_LINKINFO")
            kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
            if pod_link.match(name) and kind == "veth" and name not in keep:
                links.remove_host_link(ipr, name)
    for container_id in sorted({a.owner.container_id for a in released}):
        _forget(conf, container_id)


def cmd_status(conf: NetConf) -> None:
    from controller.cniproto import ready_marker  # noqa: PLC0415

    marker = ready_marker(conf.agent_socket)
    if conf.wait_for_agent and not marker.exists():
        raise CniError(
            NOT_AVAILABLE,
            "the Stockade agent on this node has not put its first plan in the kernel yet"
            f" ({marker} is missing): pods added now would stay unreachable until it does",
            "check the agent's pod on this node (kubectl -n <namespace> logs <stockade pod>);"
            " waitForAgent false in the CNI configuration skips this check",
        )
    ipam = _ipam(conf)
    try:
        with ipam.locked():
            ipam.check_free()
    except CniError as exc:
        raise CniError(NOT_AVAILABLE, f"stockade-cni cannot add pods now: {exc.msg}", exc.details) from exc
