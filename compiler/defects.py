"""A malformed NetworkPolicy degrades only itself: its bad rules match nothing, the rest compiles.

The agent builds its model from watch events, not through the loader, so it can hold policies the
loader would refuse: objects the API server accepted under older, looser validation (an ipBlock
``10.010.0.0/16``, read as octal by some and decimal by others), or written by anything that
skipped validation. Every consumer of the model (the plan, the reference semantics, explain,
matrix, diff) must keep working and agree on what such a policy means, so the decision is made
once, where a :class:`~compiler.cluster.ClusterModel` is built:

- each policy is checked as the API server checks it on create (:mod:`compiler.validation`);
- a rule (``spec.ingress[i]`` or ``spec.egress[i]``) whose meaning the problem makes ambiguous
  or void (an ipBlock that is not a clean CIDR, a port number outside 1-65535, an ``endPort``
  without a numeric port or below it, a peer that is empty or mixes ipBlock with selectors) is
  replaced by a rule that matches nothing: the pods the policy selects stay isolated and lose
  only what that rule would have allowed (fail closed, never open). Its other rules, and every
  other policy, are untouched;
- a problem that leaves the meaning exact (a label key or value, or a port name, outside the
  API's syntax: selectors and named ports compare strings, so they match what they say, and the
  renderers escape them) or that is outside the rules (a name, ``spec.podSelector``) is noted
  and the policy compiles as written;
- every problem becomes a :class:`PolicyDefect`, which names the policy and the field, and says
  what was done; the plan carries them as notes, and explain names them.

Checking costs about 0.1 ms per policy, so results are kept per policy object: a model rebuilt
from the same objects (as the agent does on every event) does not check them again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from compiler.model import NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer
from compiler.validation import validate_policy

# A rule's field path: spec.ingress[3]... or spec.egress[0]...
_RULE_PATH = re.compile(r"^spec\.(ingress|egress)\[(\d+)\]")


@dataclass(frozen=True)
class PolicyDefect:
    """One problem of a policy in the model; ``rule`` is (direction, index) of the rule that now
    matches nothing, or None when the policy compiles as written."""

    policy: str
    field: str
    message: str
    rule: tuple[str, int] | None

    def __str__(self) -> str:
        at = f"{self.field}: " if self.field else ""
        if self.rule is None:
            done = "compiled as written"
        else:
            done = f"its {self.rule[0]} rule {self.rule[1]} matches nothing (fail closed)"
        return f"NetworkPolicy {self.policy}: {at}{self.message}; {done}"


# A peer with neither selector nor ipBlock: the compiler and the semantics both read it as
# matching nothing (the API server refuses it, so no valid policy carries one).
_NO_PEER = (NetworkPolicyPeer(),)
_MATCH_NOTHING_INGRESS = NetworkPolicyIngressRule(from_=_NO_PEER)
_MATCH_NOTHING_EGRESS = NetworkPolicyEgressRule(to=_NO_PEER)


def _defects(policy: NetworkPolicy) -> tuple[PolicyDefect, ...]:
    try:
        problems = validate_policy(policy, file="", obj=policy.key)
    except Exception as exc:  # a bug in a check must not stop the node either
        rules = [("ingress", i) for i in range(len(policy.spec.ingress))]
        rules += [("egress", i) for i in range(len(policy.spec.egress))]
        message = f"cannot be checked ({type(exc).__name__}: {exc})"
        return tuple(PolicyDefect(policy.key, f"spec.{d}[{i}]", message, (d, i)) for d, i in rules)
    out: list[PolicyDefect] = []
    for problem in problems:
        found = _RULE_PATH.match(problem.field)
        rule = (found.group(1), int(found.group(2))) if found else None
        if rule is not None and _exact(policy, problem.field, rule):
            rule = None
        out.append(PolicyDefect(policy.key, problem.field, problem.message, rule))
    return tuple(out)


_PORT_PATH = re.compile(r"\.ports\[(\d+)\]\.port$")


def _exact(policy: NetworkPolicy, field: str, rule: tuple[str, int]) -> bool:
    """Whether the problem at ``field`` leaves the rule's meaning exact: in a label selector, or
    the syntax of a port name."""
    if "Selector" in field:
        return True
    found = _PORT_PATH.search(field)
    if found is None:
        return False
    direction, index = rule
    rules = policy.spec.ingress if direction == "ingress" else policy.spec.egress
    return isinstance(rules[index].ports[int(found.group(1))].port, str)


def _usable(policy: NetworkPolicy) -> tuple[NetworkPolicy, tuple[PolicyDefect, ...]]:
    defects = _defects(policy)
    bad = {d.rule for d in defects if d.rule is not None}
    if not bad:
        return policy, defects
    ingress = tuple(
        _MATCH_NOTHING_INGRESS if ("ingress", i) in bad else r for i, r in enumerate(policy.spec.ingress)
    )
    egress = tuple(
        _MATCH_NOTHING_EGRESS if ("egress", i) in bad else r for i, r in enumerate(policy.spec.egress)
    )
    # policyTypes stays as the API server defaulted it from the original rules: an egress rule
    # that matches nothing still makes the policy isolate for egress, as the original did.
    types = policy.spec.effective_policy_types()
    spec = policy.spec.model_copy(update={"ingress": ingress, "egress": egress, "policy_types": types})
    return policy.model_copy(update={"spec": spec}), defects


# id(policy) -> (policy, usable policy, defects); the policy is kept so its id cannot be reused
# while the entry lives. Bounded: the oldest entries go first.
_CACHE_SIZE = 1 << 16
_cache: dict[int, tuple[NetworkPolicy, NetworkPolicy, tuple[PolicyDefect, ...]]] = {}


def usable_policy(policy: NetworkPolicy) -> tuple[NetworkPolicy, tuple[PolicyDefect, ...]]:
    """The policy with every rule that has a problem replaced by one that matches nothing (the
    same object when it has none), and its problems."""
    hit = _cache.get(id(policy))
    if hit is not None and hit[0] is policy:
        return hit[1], hit[2]
    usable, defects = _usable(policy)
    while len(_cache) >= _CACHE_SIZE:
        del _cache[next(iter(_cache))]
    _cache[id(policy)] = (policy, usable, defects)
    if usable is not policy:  # a model rebuilt from the usable policy must not re-check it
        _cache[id(usable)] = (usable, usable, defects)
    return usable, defects
