"""Host-local style IPAM over the node's podCIDRs, crash-safe and shared by concurrent plugins.

State lives in ``<ipamDir>/<network name>/``:

- ``lock``: every reader and writer holds an exclusive ``fcntl`` lock on it, so concurrent ADDs
  (the runtime starts many plugins at once) never hand out one address twice;
- ``<address>``: one file per allocated address, JSON ``{"containerID", "ifname", "at"}``,
  written to a temporary file, fsynced and renamed into place: after a crash an allocation is
  either complete or absent, and a leftover temporary file is removed by the next holder;
- ``quarantine/<address>``: a released address with its release time; it is not handed out again
  before ``quarantineSeconds`` passed, so a late packet or a stale watch event about the old pod
  cannot meet a new one;
- ``last-v4`` / ``last-v6``: the last address handed out; the search starts after it (round
  robin, like host-local), which spreads reuse further. A hint only: renamed into place but not
  fsynced (the allocation files are the truth, and they are).

An allocation is keyed by (container id, interface name): ADD for a pair that already holds
addresses returns them (a runtime retrying after a crash mid-ADD gets the same addresses, and
nothing leaks). The network address of each podCIDR (and the IPv4 broadcast address) is never
handed out: the overlay uses the network address as the node's VXLAN endpoint address.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from controller.cni.config import Attachment, Network
from controller.cni.errors import ADDRESSES_EXHAUSTED, IO_FAILURE, TRY_AGAIN_LATER, CniError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_TMP_PREFIX = ".tmp-"
QUARANTINE = "quarantine"
LOCK = "lock"


@dataclass(frozen=True)
class Allocation:
    address: Address
    network: Network
    owner: Attachment


class Ipam:
    def __init__(
        self, root: str | Path, network_name: str, pod_cidrs: tuple[Network, ...], *, quarantine: float
    ) -> None:
        self.dir = Path(root) / network_name
        self.pod_cidrs = pod_cidrs
        self.quarantine = quarantine

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        try:
            (self.dir / QUARANTINE).mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.dir / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise CniError(IO_FAILURE, f"cannot open the IPAM directory {self.dir}", str(exc)) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._remove_partial_writes()
            yield
        finally:
            os.close(fd)  # closing drops the lock

    # --- queries (call with the lock held) ---

    def allocations(self) -> list[Allocation]:
        out = []
        for path in self.dir.iterdir():
            address = _address(path.name)
            if address is None or not path.is_file():
                continue
            network = next((n for n in self.pod_cidrs if address in n), None)
            owner = _read_owner(path)
            if network is not None and owner is not None:
                out.append(Allocation(address=address, network=network, owner=owner))
        return out

    def _taken(self) -> set[Address]:
        """Every address with an allocation file, readable or not (an unreadable one stays taken)."""
        return {a for a in (_address(p.name) for p in self.dir.iterdir() if p.is_file()) if a is not None}

    def owned_by(self, owner: Attachment) -> list[Allocation]:
        return sorted((a for a in self.allocations() if a.owner == owner), key=lambda a: a.address.version)

    # --- changes (call with the lock held) ---

    def allocate(self, owner: Attachment) -> list[Allocation]:
        """One address per podCIDR for ``owner``; the ones it already holds if it holds any."""
        held = self.owned_by(owner)
        if {a.network for a in held} == set(self.pod_cidrs):
            return held
        taken = self._taken()
        quarantined = self._quarantined()
        made: list[Allocation] = list(held)
        try:
            for network in self.pod_cidrs:
                if any(a.network == network for a in held):
                    continue
                address = self._next_free(network, taken, quarantined)
                self._write(self.dir / str(address), _owner_json(owner), sync_dir=False)
                # Only a hint where the next search starts: atomic (renamed into place) but not
                # fsynced; lost or stale after a crash, the search merely starts elsewhere.
                self._write(self.dir / f"last-v{network.version}", str(address), durable=False)
                made.append(Allocation(address=address, network=network, owner=owner))
            if len(made) > len(held):
                # One directory fsync for every new allocation file: ADD returns (and the address
                # is in use) only after they are all durable.
                _fsync_dir(self.dir)
        except BaseException:
            self._forget([a for a in made if a not in held])
            raise
        return sorted(made, key=lambda a: a.address.version)

    def release(self, owner: Attachment, *, quarantine: bool = True) -> list[Allocation]:
        """Release what ``owner`` holds (nothing held is not an error); returns what was released."""
        held = self.owned_by(owner)
        if quarantine and self.quarantine > 0 and held:
            for allocation in held:
                # The quarantine entries first, durable before any allocation file goes: a crash
                # between the two steps leaves the address allocated (the next DEL or GC
                # finishes), never free without its grace period.
                self._write(
                    self.dir / QUARANTINE / str(allocation.address),
                    json.dumps({"at": time.time()}),
                    sync_dir=False,
                )
            _fsync_dir(self.dir / QUARANTINE)
        self._forget(held)
        return held

    def gc(self, valid: tuple[Attachment, ...]) -> list[Allocation]:
        """Release every allocation whose owner is not in ``valid``; returns them."""
        keep = set(valid)
        stale = [a for a in self.allocations() if a.owner not in keep]
        released = []
        for owner in sorted({a.owner for a in stale}, key=lambda o: (o.container_id, o.ifname)):
            released += self.release(owner)
        return released

    def check_free(self) -> None:
        """Raise the error ADD would raise if a podCIDR has no free address now."""
        taken, quarantined = self._taken(), self._quarantined()
        for network in self.pod_cidrs:
            self._next_free(network, taken, quarantined)

    # --- internals ---

    def _next_free(self, network: Network, taken: set[Address], quarantined: dict[Address, float]) -> Address:
        first = int(network.network_address) + 1
        last = int(network.broadcast_address) - (1 if network.version == 4 else 0)
        size = last - first + 1
        start = first
        previous = _address((self._read(self.dir / f"last-v{network.version}") or "").strip())
        if previous is not None and previous in network and first <= int(previous) < last:
            start = int(previous) + 1
        # A free address is found within (taken + quarantined + 1) candidates when one exists,
        # so even a /64 is never scanned whole.
        budget = min(size, len(taken) + len(quarantined) + 1)
        factory = ipaddress.IPv4Address if network.version == 4 else ipaddress.IPv6Address
        for step in range(budget):
            candidate = factory(first + (start - first + step) % size)
            if candidate not in taken and candidate not in quarantined:
                return candidate
        in_use = sum(1 for a in taken if a in network)
        waiting = [seconds for a, seconds in quarantined.items() if a in network]
        if waiting:
            raise CniError(
                TRY_AGAIN_LATER,
                f"podCIDR {network} has no free address: {in_use} allocated, {len(waiting)} released "
                f"less than {self.quarantine:g}s ago (free again in {min(waiting):.0f}s)",
            )
        raise CniError(
            ADDRESSES_EXHAUSTED,
            f"podCIDR {network} is exhausted: all {size} addresses are allocated "
            f"(see {self.dir}; delete pods or give the node a larger podCIDR)",
        )

    def _quarantined(self) -> dict[Address, float]:
        """Quarantined addresses and the seconds each has left; expired entries are removed."""
        now = time.time()
        out: dict[Address, float] = {}
        for path in (self.dir / QUARANTINE).iterdir():
            address = _address(path.name)
            if address is None:
                continue
            try:
                released = float(json.loads(path.read_text())["at"])
            except (OSError, ValueError, KeyError, TypeError):
                released = now  # unreadable: treat as just released, the safe side
            left = released + self.quarantine - now
            if left > 0:
                out[address] = left
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        return out

    def _forget(self, allocations: list[Allocation]) -> None:
        for allocation in allocations:
            with contextlib.suppress(FileNotFoundError):
                (self.dir / str(allocation.address)).unlink()
        if allocations:
            _fsync_dir(self.dir)

    def _remove_partial_writes(self) -> None:
        for directory in (self.dir, self.dir / QUARANTINE):
            for path in directory.glob(f"{_TMP_PREFIX}*"):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    @staticmethod
    def _read(path: Path) -> str | None:
        try:
            return path.read_text()
        except FileNotFoundError:
            return None

    @staticmethod
    def _write(path: Path, text: str, *, durable: bool = True, sync_dir: bool = True) -> None:
        """Replace ``path`` atomically. ``durable``: the content is fsynced before the rename (after
        a crash the file is complete or absent, never empty); ``sync_dir``: the rename too, here
        (False: the caller fsyncs the directory once for several files)."""
        tmp = path.with_name(f"{_TMP_PREFIX}{path.name}.{os.getpid()}")
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
                if durable:
                    f.flush()
                    os.fsync(f.fileno())
            os.rename(tmp, path)
            if durable and sync_dir:
                _fsync_dir(path.parent)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise CniError(IO_FAILURE, f"cannot write {path}", str(exc)) from exc


def _owner_json(owner: Attachment) -> str:
    return json.dumps({"containerID": owner.container_id, "ifname": owner.ifname, "at": time.time()})


def _read_owner(path: Path) -> Attachment | None:
    try:
        data = json.loads(path.read_text())
        return Attachment(container_id=str(data["containerID"]), ifname=str(data["ifname"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _address(text: str) -> Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
