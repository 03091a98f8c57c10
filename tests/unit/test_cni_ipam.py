"""The IPAM over a temporary directory: allocation, idempotence, release with quarantine, GC,
exhaustion, and what a crash can leave behind. Expected addresses are written out by hand."""

from __future__ import annotations

import ipaddress
import json
import time
from pathlib import Path

import pytest

from controller.cni.config import Attachment, Network
from controller.cni.errors import ADDRESSES_EXHAUSTED, TRY_AGAIN_LATER, CniError
from controller.cni.ipam import Allocation, Ipam

V4 = ipaddress.ip_network("10.0.0.0/29")  # .1 - .6 usable
V6 = ipaddress.ip_network("fd00::/125")  # ::1 - ::7 usable


def owner(n: int) -> Attachment:
    return Attachment(container_id=f"c{n}", ifname="eth0")


def ipam(tmp_path: Path, *, quarantine: float = 0.0, cidrs: tuple[Network, ...] = (V4, V6)) -> Ipam:
    return Ipam(tmp_path, "net", cidrs, quarantine=quarantine)


def addresses(allocations: list[Allocation]) -> list[str]:
    return [str(a.address) for a in allocations]


def test_one_address_per_family_and_round_robin(tmp_path: Path) -> None:
    pool = ipam(tmp_path)
    with pool.locked():
        assert addresses(pool.allocate(owner(1))) == ["10.0.0.1", "fd00::1"]
        assert addresses(pool.allocate(owner(2))) == ["10.0.0.2", "fd00::2"]
        pool.release(owner(1))
        # The search continues after the last one handed out: .1 is not reused at once.
        assert addresses(pool.allocate(owner(3))) == ["10.0.0.3", "fd00::3"]


def test_allocation_is_idempotent_per_attachment(tmp_path: Path) -> None:
    pool = ipam(tmp_path)
    with pool.locked():
        first = pool.allocate(owner(1))
        assert pool.allocate(owner(1)) == first
        other_if = Attachment(container_id="c1", ifname="net1")
        assert addresses(pool.allocate(other_if)) == ["10.0.0.2", "fd00::2"]


def test_files_say_who_owns_what(tmp_path: Path) -> None:
    pool = ipam(tmp_path)
    with pool.locked():
        pool.allocate(owner(7))
    data = json.loads((tmp_path / "net" / "10.0.0.1").read_text())
    assert (data["containerID"], data["ifname"]) == ("c7", "eth0")
    assert (tmp_path / "net" / "fd00::1").exists()


def test_exhaustion_skips_network_and_broadcast(tmp_path: Path) -> None:
    pool = ipam(tmp_path, cidrs=(V4,))
    with pool.locked():
        got = [addresses(pool.allocate(owner(i)))[0] for i in range(6)]
        assert got == [f"10.0.0.{i}" for i in range(1, 7)]
        with pytest.raises(CniError) as caught:
            pool.allocate(owner(99))
    assert caught.value.code == ADDRESSES_EXHAUSTED
    assert "10.0.0.0/29 is exhausted" in caught.value.msg


def test_quarantine_holds_released_addresses(tmp_path: Path) -> None:
    pool = ipam(tmp_path, quarantine=30, cidrs=(V4,))
    with pool.locked():
        for i in range(6):
            pool.allocate(owner(i))
        pool.release(owner(0))
        with pytest.raises(CniError) as caught:
            pool.allocate(owner(99))
        assert caught.value.code == TRY_AGAIN_LATER
        # Expired entries are cleared and the address is free again.
        path = tmp_path / "net" / "quarantine" / "10.0.0.1"
        path.write_text(json.dumps({"at": time.time() - 31}))
        assert addresses(pool.allocate(owner(99))) == ["10.0.0.1"]
        assert not path.exists()


def test_rollback_of_a_partial_allocation(tmp_path: Path) -> None:
    pool = ipam(tmp_path, cidrs=(V4, ipaddress.ip_network("fd00::/126")))  # v6: ::1 - ::3
    with pool.locked():
        for i in range(3):
            pool.allocate(owner(i))
        with pytest.raises(CniError):
            pool.allocate(owner(9))  # v4 has room, v6 does not: the v4 address must not stay taken
        assert pool.owned_by(owner(9)) == []
        assert "10.0.0.4" not in {p.name for p in (tmp_path / "net").iterdir()}


def test_gc_releases_what_is_not_valid(tmp_path: Path) -> None:
    pool = ipam(tmp_path)
    with pool.locked():
        for i in range(3):
            pool.allocate(owner(i))
        released = pool.gc((owner(1),))
        assert sorted({a.owner.container_id for a in released}) == ["c0", "c2"]
        assert [a.owner for a in pool.allocations()] == [owner(1), owner(1)]


def test_leftovers_of_a_crash(tmp_path: Path) -> None:
    pool = ipam(tmp_path)
    with pool.locked():
        pass
    directory = tmp_path / "net"
    (directory / ".tmp-10.0.0.1.999").write_text('{"contai')  # an interrupted write
    (directory / "10.0.0.2").write_text("garbage")  # unreadable: must stay taken, never reused
    with pool.locked():
        assert not list(directory.glob(".tmp-*"))
        assert addresses(pool.allocate(owner(1))) == ["10.0.0.1", "fd00::1"]
        assert addresses(pool.allocate(owner(2))) == ["10.0.0.3", "fd00::2"]


def test_release_of_nothing_is_fine(tmp_path: Path) -> None:
    pool = ipam(tmp_path)
    with pool.locked():
        assert pool.release(owner(1)) == []


def _record_durability(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Spy on fsync and rename (they still run): the order in which data reaches the disk."""
    import os  # noqa: PLC0415

    events: list[tuple[str, str]] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def rename(src: str | Path, dst: str | Path) -> None:
        events.append(("rename", str(dst)))
        real_rename(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    return events


def test_allocation_files_are_durable_before_allocate_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each allocation file's content is fsynced before its rename, and the directory after the
    last rename; the round-robin hint (last-v4/last-v6) is renamed into place but never fsynced."""
    pool = ipam(tmp_path)
    with pool.locked():
        events = _record_durability(monkeypatch)
        pool.allocate(owner(1))
    net = str(tmp_path / "net")
    renames = [i for i, (kind, _) in enumerate(events) if kind == "rename"]
    for address in ("10.0.0.1", "fd00::1"):
        at = events.index(("rename", f"{net}/{address}"))
        assert events[at - 1][0] == "fsync" and events[at - 1][1].startswith(f"{net}/.tmp-{address}.")
    assert events[-1] == ("fsync", net) and renames[-1] < len(events) - 1
    assert not [path for kind, path in events if kind == "fsync" and "last-v" in path]
    assert [kind for kind, _ in events].count("fsync") == 3  # two files, one directory


def test_quarantine_entries_are_durable_before_allocations_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = ipam(tmp_path, quarantine=60.0)
    with pool.locked():
        pool.allocate(owner(1))
        events = _record_durability(monkeypatch)
        pool.release(owner(1))
    net = str(tmp_path / "net")
    quarantine_synced = events.index(("fsync", f"{net}/quarantine"))
    assert ("rename", f"{net}/quarantine/10.0.0.1") in events[:quarantine_synced]
    assert ("rename", f"{net}/quarantine/fd00::1") in events[:quarantine_synced]
    assert events[-1] == ("fsync", net)  # the allocation files' removal, after
    assert not (tmp_path / "net" / "10.0.0.1").exists()
