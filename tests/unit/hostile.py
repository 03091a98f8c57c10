"""A cluster whose every API string tries to break out of nft syntax (shared by unit and kernel tests).

The compiler does not validate (the loader does), so the plan must be safe even for a model
built directly from objects the API server would never accept.
"""

from __future__ import annotations

from compiler.cluster import ClusterModel
from compiler.model import Namespace, NetworkPolicy, Node, Pod

NODE = 'node"; flush ruleset; #\n'
NS = 'x"} ; delete table inet stockade #\nchain'
LONG = "p" * 250 + "雪☃" * 20
VALUES = ('we"b\n}', "a\\", "tab\there", "$var@set", "\u2028line", "é" * 40)
# Fragments that must never appear outside a comment string or a `#` line of the text.
BAD_FRAGMENTS = ('"}', "flush ruleset", "delete table inet stockade #", "$var", "\\\n", "雪")


def model() -> ClusterModel:
    pods = tuple(
        Pod.model_validate(
            {
                "metadata": {"name": f'pod"{i}\n', "namespace": NS, "labels": {"app": value, 'k"ey': value}},
                "spec": {
                    "nodeName": NODE,
                    "containers": [{"ports": [{"containerPort": 8080 + i, "name": 'ht"tp\n'}]}],
                },
                "status": {
                    "phase": "Running",
                    "podIP": f"10.244.1.{10 + i}",
                    "podIPs": [{"ip": f"10.244.1.{10 + i}"}],
                },
            }
        )
        for i, value in enumerate(VALUES)
    )
    selector = {"matchExpressions": [{"key": 'k"ey', "operator": "In", "values": list(VALUES)}]}
    policy = NetworkPolicy.model_validate(
        {
            "metadata": {"name": LONG + '";\n', "namespace": NS},
            "spec": {
                "podSelector": selector,
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{"from": [{"podSelector": selector}], "ports": [{"port": 'ht"tp\n'}]}],
                "egress": [
                    {
                        "to": [
                            {"namespaceSelector": {"matchLabels": {'n"s': '"}'}}, "podSelector": selector}
                        ],
                        "ports": [{"port": 'ht"tp\n'}],
                    }
                ],
            },
        }
    )
    namespace = Namespace.model_validate({"metadata": {"name": NS, "labels": {'n"s': '"}'}}})
    node = Node.model_validate({"metadata": {"name": NODE}, "spec": {"podCIDRs": ["10.244.1.0/24"]}})
    return ClusterModel(namespaces=(namespace,), pods=pods, policies=(policy,), nodes=(node,))
