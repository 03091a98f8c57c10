"""controller.nft under threads, against the real libnftables: several :class:`Nft` objects in one
process (tests run several agents; an agent's drift check lists while another thread applies)
listing tables with concatenated sets at once, with or without an apply running, must neither
abort the process nor starve a thread.

libnftables 1.0.6 formats a concatenated set type for JSON output with ``strtok(3)``, whose state
is process-global: two unserialized listings abort the process within a second here
(``json.c:71: set_dtype_json: Assertion `__out' failed``). So each case runs in a child process,
and the return code is the verdict."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.kernel.test_render_load import scratch_netns

pytestmark = pytest.mark.kernel

# 100 sets typed (interface . address . port), the shape of the table's pod-source and named-port
# sets, so that every listing formats many concatenated types.
CHILD = """
import sys, threading, time
from controller.nft import Nft

mode, seconds = sys.argv[1], float(sys.argv[2])
sets = [
    {"set": {"family": "inet", "table": "stockade", "name": f"s{i}",
             "type": ["ifname", "ipv4_addr", "inet_service"]}}
    for i in range(100)
]
table = {"table": {"family": "inet", "name": "stockade"}}
Nft().run({"nftables": [{"add": table}, *({"add": s} for s in sets)]}, what="setup")
counts, errors, stop = {}, [], time.monotonic() + seconds

def lister(k):
    nft = Nft()  # one per thread, as one per agent
    try:
        while time.monotonic() < stop:
            assert nft.list_table() is not None
            counts[k] = counts.get(k, 0) + 1
    except BaseException as exc:
        errors.append(repr(exc))

def applier(k):
    nft = Nft()
    element = {"family": "inet", "table": "stockade", "name": "s0",
               "elem": [{"concat": ["stk0", "10.0.0.1", 80]}]}
    try:
        while time.monotonic() < stop:
            nft.run({"nftables": [{"add": {"element": element}}]}, what="add")
            nft.run({"nftables": [{"delete": {"element": element}}]}, what="delete")
            counts[k] = counts.get(k, 0) + 1
    except BaseException as exc:
        errors.append(repr(exc))

workers = [threading.Thread(target=lister, args=(k,)) for k in range(4)]
if mode == "with-apply":
    workers.append(threading.Thread(target=applier, args=(4,)))
for w in workers:
    w.start()
for w in workers:
    w.join()
print(len(counts), min(counts.values()) if counts else 0, errors)
"""


@pytest.mark.parametrize("mode", ["listings", "with-apply"])
def test_concurrent_listings_in_one_process_neither_abort_nor_starve(mode: str) -> None:
    with scratch_netns("threads") as ns:
        child = subprocess.run(
            ["nsenter", f"--net=/run/netns/{ns}", sys.executable, "-c", CHILD, mode, "3"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert child.returncode == 0, f"the process died ({child.returncode}): {child.stderr[-2000:]}"
    threads, fewest, errors = child.stdout.split(maxsplit=2)
    assert errors.strip() == "[]"
    assert int(threads) == (4 if mode == "listings" else 5)
    assert int(fewest) >= 1, "a thread never got to list (or apply) in 3 s"
