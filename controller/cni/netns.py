"""Entering and checking a network namespace, without pyroute2.

ADD checks CNI_NETNS before it allocates anything, and reports the pod to the agent before it
makes links; both happen before pyroute2 is imported (~20 ms of the plugin's start-up), so that
import overlaps with the agent programming the pod instead of preceding the report.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from controller.cni.errors import UNKNOWN_CONTAINER, CniError

CLONE_NEWNET = 0x40000000


def setns(fd: int) -> None:
    """Move this thread into the network namespace ``fd``; OSError if that is not possible."""
    native = getattr(os, "setns", None)
    if native is not None:
        native(fd, CLONE_NEWNET)
        return
    import ctypes  # noqa: PLC0415 - only on Python < 3.12, and only when a namespace is entered

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


@contextlib.contextmanager
def netns_fd(path: str) -> Iterator[int]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise CniError(UNKNOWN_CONTAINER, f"CNI_NETNS {path} does not exist (the sandbox is gone?)") from exc
    except OSError as exc:
        raise CniError(UNKNOWN_CONTAINER, f"CNI_NETNS {path} cannot be opened", str(exc)) from exc
    try:
        yield fd
    finally:
        os.close(fd)


@contextlib.contextmanager
def inside(fd: int, path: str) -> Iterator[None]:
    """This thread in the network namespace ``fd`` (opened from ``path``) for the block, and back
    in its own afterwards; CniError when ``fd`` is not a namespace it can enter."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            setns(fd)
        except OSError as exc:
            raise CniError(
                UNKNOWN_CONTAINER, f"CNI_NETNS {path} is not a network namespace", str(exc)
            ) from exc
        try:
            yield
        finally:
            setns(home)
    finally:
        os.close(home)


def verify_netns(path: str) -> None:
    """Raise unless ``path`` is a network namespace we can enter (checked before allocating)."""
    with netns_fd(path) as fd, inside(fd, path):
        pass
