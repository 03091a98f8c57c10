"""Compile options: what a plan depends on besides the cluster model.

- ``pod_interface_prefix``: the prefix of pods' host-side interface names, which scopes the
  host-wide checks (anti-spoofing, ``ct state invalid drop``) to pod traffic. Its default is the
  prefix stockade-cni uses (:data:`compiler.naming.POD_INTERFACE_PREFIX`); a node whose pods are
  attached by another plugin needs that plugin's prefix, or anti-spoofing does not apply to its
  pods.
- ``overlay_port``: the UDP port of Stockade's VXLAN overlay, whose packets to and from the node's
  own InternalIPs are exempt from conntrack (:mod:`compiler.basechains` says why); ``None`` when
  the agent does not run the overlay (``--no-overlay``: another plugin's tunnel is not ours).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from compiler import naming
from compiler.errors import OptionError
from compiler.ifnames import VXLAN_PORT

# Letters, digits, '-', '_' and '.': the usual CNI plugins' names fit, and none of these means
# anything inside an nft string or its interface wildcard (``"stk*"``), so the prefix is written as is.
_PREFIX = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class CompileOptions:
    pod_interface_prefix: str = naming.POD_INTERFACE_PREFIX
    overlay_port: int | None = VXLAN_PORT

    def __post_init__(self) -> None:
        port = self.overlay_port
        if port is not None and not (isinstance(port, int) and 1 <= port <= 65535):
            raise OptionError(f"overlay port {port!r}: a UDP port is 1-65535 (or None: no overlay)")
        prefix = self.pod_interface_prefix
        if not _PREFIX.fullmatch(prefix):
            raise OptionError(
                f"pod interface prefix {naming.sanitize(prefix)!r}: use letters, digits, '-', '_' or '.'"
                " (at least one)"
            )
        if len(prefix) >= naming.IFNAME_MAX:
            raise OptionError(
                f"pod interface prefix {prefix!r}: {len(prefix)} characters leave no room for a suffix"
                f" (interface names have at most {naming.IFNAME_MAX})"
            )


DEFAULT_OPTIONS = CompileOptions()

__all__ = ["DEFAULT_OPTIONS", "CompileOptions"]
