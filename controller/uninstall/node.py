"""``stockade uninstall-node``: leave a node as it was before Stockade (what ``helm uninstall``'s
cleanup runs on every node, and what a user runs by hand when the hook is off).

In this order, so that no new pod is attached through a half-removed Stockade:

1. the CNI conflist (the runtime stops choosing Stockade for new sandboxes);
2. the ``stockade-cni`` binary;
3. the VXLAN device (only a VXLAN device of that name: another kind is not Stockade's and stays);
4. table ``inet stockade``, through :meth:`controller.applier.Applier.remove` (one transaction,
   no error when absent), the agent's own removal path;
5. unless ``keep_state``: the contents of the state directory (IPAM allocations); the contents of
   the run directory (the CNI socket) and of the plugin's runtime dir (``stockade
   install-runtime``). The directories themselves stay: in the cleanup pod they are hostPath
   mount points.

Every step is idempotent: a second run finds nothing and says so. Only the agent must not be
running on the node any more (its drift check would put the table back); the chart's hook waits
for that.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.errors import UsageError

PLUGIN_BINARY = "stockade-cni"
# Directories whose contents uninstall-node may delete must be at least this deep (/var/lib/x), so
# a wrong value (/, /var, /run) can never empty a system directory.
_MIN_STATE_DEPTH = 2


@dataclass(frozen=True)
class NodeTargets:
    """What Stockade put on a node (the chart's values; defaults are the chart's defaults)."""

    cni_bin_dir: Path = Path("/opt/cni/bin")
    cni_conf_dir: Path = Path("/etc/cni/net.d")
    cni_conf_name: str = "10-stockade.conflist"
    state_dir: Path = Path("/var/lib/stockade")
    run_dir: Path = Path("/run/stockade")
    overlay_device: str = "stockade.vx"
    runtime_dir: Path | None = None  # what `stockade install-runtime` wrote (the plugin's Python)

    def check(self) -> None:
        """Refuse targets that could remove what is not Stockade's; raises :class:`UsageError`."""
        problems = []
        for flag, path in (
            ("--cni-bin-dir", self.cni_bin_dir),
            ("--cni-conf-dir", self.cni_conf_dir),
            ("--state-dir", self.state_dir),
            ("--run-dir", self.run_dir),
        ):
            if not path.is_absolute():
                problems.append(f"{flag} {path}: not an absolute path")
        emptied = [("--state-dir", self.state_dir), ("--run-dir", self.run_dir)]
        if self.runtime_dir is not None:
            emptied.append(("--runtime-dir", self.runtime_dir))
            if not self.runtime_dir.is_absolute():
                problems.append(f"--runtime-dir {self.runtime_dir}: not an absolute path")
        for flag, path in emptied:
            if path.is_absolute() and len(path.resolve().parts) - 1 < _MIN_STATE_DEPTH:
                problems.append(
                    f"{flag} {path}: refusing to empty a top-level directory (want e.g. /var/lib/stockade)"
                )
        if "/" in self.cni_conf_name or self.cni_conf_name in ("", ".", ".."):
            problems.append(f"--cni-conf-name {self.cni_conf_name!r}: a file name, not a path")
        if not self.overlay_device or "/" in self.overlay_device or len(self.overlay_device) > 15:
            problems.append(f"--overlay-device {self.overlay_device!r}: not an interface name")
        if problems:
            raise UsageError("\n".join(problems))


@dataclass(frozen=True)
class Step:
    """One thing uninstall-node looked at: ``removed`` True when it deleted something."""

    what: str
    removed: bool
    detail: str = ""

    def line(self) -> str:
        verb = "removed" if self.removed else "absent"
        return f"{verb}: {self.what}" + (f" ({self.detail})" if self.detail else "")


TableRemover = Callable[[], bool]  # True when a table was there
LinkRemover = Callable[[str], Step]


def uninstall_node(
    targets: NodeTargets, *, keep_state: bool, remove_table: TableRemover, remove_link: LinkRemover
) -> list[Step]:
    """Remove everything :class:`NodeTargets` names; returns what was found, step by step."""
    targets.check()
    steps = [
        _unlink(targets.cni_conf_dir / targets.cni_conf_name, "CNI config"),
        _unlink(targets.cni_bin_dir / PLUGIN_BINARY, "CNI plugin"),
        remove_link(targets.overlay_device),
    ]
    steps.append(Step("table inet stockade", remove_table()))
    if keep_state:
        steps.append(Step(f"state {targets.state_dir}", False, "kept: --keep-state"))
    else:
        steps.append(_empty(targets.state_dir, "state"))
    steps.append(_empty(targets.run_dir, "run dir"))
    if targets.runtime_dir is not None:  # after the plugin binary: nothing runs it any more
        steps.append(_empty(targets.runtime_dir, "plugin runtime"))
    return steps


def _unlink(path: Path, what: str) -> Step:
    try:
        path.unlink()
    except FileNotFoundError:
        return Step(f"{what} {path}", False)
    return Step(f"{what} {path}", True)


def _empty(directory: Path, what: str) -> Step:
    if not directory.is_dir():
        return Step(f"{what} {directory}", False)
    entries = sorted(directory.iterdir())
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink(missing_ok=True)
    return Step(f"{what} {directory}", bool(entries), f"{len(entries)} entries" if entries else "")


# ---- the kernel side (libnftables, netlink): what the command wires in ---------------------------


def kernel_table_remover() -> TableRemover:
    """Remove table ``inet stockade`` the way the agent does (:meth:`Applier.remove`)."""
    from controller.applier import Applier  # noqa: PLC0415 - node-side: libnftables
    from controller.nft import Nft  # noqa: PLC0415

    nft = Nft()

    def remove() -> bool:
        present = nft.list_table() is not None
        Applier(nft=nft).remove()
        return present

    return remove


def vxlan_remover(name: str) -> Step:
    """Delete the VXLAN device ``name``; a device of that name of another kind is left alone."""
    from pyroute2 import IPRoute  # noqa: PLC0415 - node-side: netlink

    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=name)
        if not found:
            return Step(f"overlay device {name}", False)
        kind = _link_kind(ipr.get_links(found[0])[0])
        if kind != "vxlan":
            return Step(f"overlay device {name}", False, f"kept: a {kind or 'device'} device, not VXLAN")
        ipr.link("del", index=found[0])
    return Step(f"overlay device {name}", True)


def _link_kind(link: Any) -> str:
    info = link.get_attr("IFLA_LINKINFO")
    return str(info.get_attr("IFLA_INFO_KIND") or "") if info is not None else ""
