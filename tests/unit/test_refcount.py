"""compiler.refcount and its two users in compiler.chainstore: per-pod chains live while a local
pod dispatches to them, peer sets while a chain uses them."""

from __future__ import annotations

import dataclasses

import pytest

from compiler.chainstore import ChainStore
from compiler.errors import InternalError
from compiler.peersets import Selection
from compiler.podchains import ChainBuild, PodChains
from compiler.podindex import PodIndex
from compiler.refcount import RefCount
from tests.unit.test_plan import ALLOW_CLIENT, CLIENT, WEB, model, policy

# (operations, the results acquire/release return, counts of "a" and "b" at the end)
CASES = [
    pytest.param(["+a"], [True], (1, 0), id="first-acquire"),
    pytest.param(["+a", "+a"], [True, False], (2, 0), id="second-acquire"),
    pytest.param(["+a", "-a"], [True, True], (0, 0), id="last-release"),
    pytest.param(["+a", "+a", "-a"], [True, False, False], (1, 0), id="release-one-of-two"),
    pytest.param(["+a", "+b", "-a"], [True, True, True], (0, 1), id="keys-independent"),
    pytest.param(["+a", "-a", "+a"], [True, True, True], (1, 0), id="reacquire-after-last"),
]


@pytest.mark.parametrize(("ops", "results", "counts"), CASES)
def test_refcount(ops: list[str], results: list[bool], counts: tuple[int, int]) -> None:
    refs: RefCount[str] = RefCount()
    got = [refs.acquire(op[1]) if op[0] == "+" else refs.release(op[1]) for op in ops]
    assert got == results
    assert (refs.count("a"), refs.count("b")) == counts


@pytest.mark.parametrize("ops", [["-a"], ["+a", "-a", "-a"], ["+b", "-a"]], ids=["never", "twice", "other"])
def test_release_of_unheld_key_is_a_bug(ops: list[str]) -> None:
    refs: RefCount[str] = RefCount()
    with pytest.raises(InternalError, match="'a'"):
        for op in ops:
            refs.acquire(op[1]) if op[0] == "+" else refs.release(op[1])


def test_generic_over_key_type() -> None:
    refs: RefCount[tuple[str, int]] = RefCount()
    assert refs.acquire(("chain", 4)) and not refs.acquire(("chain", 4))
    assert not refs.release(("chain", 4)) and refs.release(("chain", 4))


# --- the chain store ------------------------------------------------------------------------------


def _store() -> tuple[ChainStore, ChainBuild]:
    m = model(WEB, CLIENT, policies=(policy("allow", ALLOW_CLIENT),))
    build = PodChains(m.policies).chain_for(WEB, "ingress")
    assert build is not None and build[1], "the chain uses peer sets"
    return ChainStore(Selection(PodIndex(m.pods), m.namespace_labels)), build


def test_chain_and_its_sets_live_until_the_last_pod_releases_it() -> None:
    store, (chain, specs) = _store()
    store.acquire((chain, specs))
    store.acquire((chain, specs))  # a second pod under the same policies shares the chain
    assert set(store.chains) == {chain.name}
    assert set(store.specs) == {s.name for s in specs}
    v4 = next(s.name for s in specs if s.family == 4)
    assert store.elements(v4) == {"10.244.1.3"}  # filled from the index when created
    store.release(chain.name)
    assert set(store.chains) == {chain.name} and set(store.specs) == {s.name for s in specs}
    store.release(chain.name)
    assert not store.chains and not store.specs and store.elements(v4) == set()
    with pytest.raises(InternalError):
        store.release(chain.name)


def test_a_set_two_chains_use_outlives_the_first() -> None:
    store, (chain, specs) = _store()
    twin = (dataclasses.replace(chain, name=f"{chain.name}-twin"), specs)  # another chain, same peers
    store.acquire((chain, specs))
    store.acquire(twin)
    store.release(chain.name)
    assert set(store.chains) == {twin[0].name}
    assert set(store.specs) == {s.name for s in specs}, "still used by the twin"
    store.release(twin[0].name)
    assert not store.chains and not store.specs


def test_a_different_chain_under_a_taken_name_is_a_bug() -> None:
    store, (chain, specs) = _store()
    store.acquire((chain, specs))
    with pytest.raises(InternalError, match="chain name collision"):
        store.acquire((dataclasses.replace(chain, rules=chain.rules[:1]), specs))
