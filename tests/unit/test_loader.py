"""Loading manifests: kinds, Lists, workloads as template pods, skipped kinds, duplicates, and
every problem of every file at once."""

from __future__ import annotations

import json
import re
from pathlib import Path
from textwrap import dedent

import pytest
import yaml

from compiler.errors import InputError, Problem
from compiler.loader import WORKLOAD_ANNOTATION, LoadResult, load_manifests

DATA = Path(__file__).parent.parent / "data"


def load(*texts: str) -> LoadResult:
    return load_manifests([(f"f{i}.yaml", dedent(t)) for i, t in enumerate(texts, 1)])


def problems(*texts: str) -> list[Problem]:
    with pytest.raises(InputError) as info:
        load(*texts)
    return list(info.value.problems)


POLICY = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: x}
spec: {podSelector: {}}
"""


def test_kinds_are_read_into_the_model() -> None:
    result = load(
        POLICY,
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: a, namespace: x, labels: {app: web}}
        status: {podIP: 10.0.0.1}
        ---
        apiVersion: v1
        kind: Namespace
        metadata: {name: x, labels: {team: a}}
        ---
        apiVersion: v1
        kind: Node
        metadata: {name: n1}
        spec: {podCIDR: 10.244.1.0/24}
        """,
    )
    model = result.model
    assert [p.key for p in model.policies] == ["x/deny-all"]
    assert [p.key for p in model.pods] == ["x/a"]
    assert model.pods[0].ips() == ("10.0.0.1",)
    assert model.namespace_labels("x") == {"team": "a", "kubernetes.io/metadata.name": "x"}
    assert [n.pod_cidrs() for n in model.nodes] == [("10.244.1.0/24",)]
    assert result.notes == ()


def test_objects_without_a_namespace_are_in_default() -> None:
    model = load(
        """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: p}
        spec: {podSelector: {}}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: a, namespace: ""}
        """
    ).model
    assert [p.key for p in model.policies] == ["default/p"]
    assert [p.key for p in model.pods] == ["default/a"]


def test_documents_empty_or_comment_only_are_skipped() -> None:
    model = load("---\n# just a comment\n---\n" + POLICY + "---\n---\n").model
    assert len(model.policies) == 1


def test_json_single_and_concatenated() -> None:
    doc = yaml.safe_load(POLICY)
    other = {**doc, "metadata": {"name": "other", "namespace": "x"}}
    single = load_manifests([("p.json", json.dumps(doc, indent="\t"))])
    stream = load_manifests([("p.json", json.dumps(doc) + "\n" + json.dumps(other))])
    assert [p.key for p in single.model.policies] == ["x/deny-all"]
    assert [p.key for p in stream.model.policies] == ["x/deny-all", "x/other"]


def test_json_on_stdin_is_recognised_without_a_file_name() -> None:
    result = load_manifests(
        [("<stdin>", json.dumps({"kind": "List", "apiVersion": "v1", "items": [yaml.safe_load(POLICY)]}))]
    )
    assert [p.key for p in result.model.policies] == ["x/deny-all"]


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(
            """
            apiVersion: v1
            kind: List
            items:
            - apiVersion: networking.k8s.io/v1
              kind: NetworkPolicy
              metadata: {name: a, namespace: x}
              spec: {podSelector: {}}
            - {apiVersion: v1, kind: Pod, metadata: {name: b, namespace: x}}
            """,
            id="list",
        ),
        pytest.param(
            """
            apiVersion: networking.k8s.io/v1
            kind: NetworkPolicyList
            items:
            - {metadata: {name: a, namespace: x}, spec: {podSelector: {}}}
            ---
            apiVersion: v1
            kind: PodList
            items:
            - {metadata: {name: b, namespace: x}}
            """,
            id="typed-lists-without-item-kinds",
        ),
        pytest.param(
            """
            apiVersion: v1
            kind: List
            items:
            - apiVersion: v1
              kind: List
              items:
              - apiVersion: networking.k8s.io/v1
                kind: NetworkPolicy
                metadata: {name: a, namespace: x}
                spec: {podSelector: {}}
            - {apiVersion: v1, kind: Pod, metadata: {name: b, namespace: x}}
            """,
            id="nested-list",
        ),
    ],
)
def test_lists(text: str) -> None:
    model = load(text).model
    assert [p.key for p in model.policies] == ["x/a"]
    assert [p.key for p in model.pods] == ["x/b"]


def test_an_empty_list_is_fine() -> None:
    assert load("apiVersion: v1\nkind: List\nitems: []\n").model.pods == ()


TEMPLATE = """
      metadata:
        labels: {app: web}
        annotations: {ignored: "yes"}
      spec:
        nodeName: n1
        hostNetwork: false
        containers:
        - name: c
          ports: [{containerPort: 8080, name: http}]
"""


def workload(kind: str, api: str) -> str:
    template = dedent(TEMPLATE)
    if kind == "CronJob":
        body = "spec:\n  schedule: '* * * * *'\n  jobTemplate:\n    spec:\n      template:" + _indent(
            template, 8
        )
    else:
        body = "spec:\n  replicas: 3\n  template:" + _indent(template, 4)
    return f"apiVersion: {api}\nkind: {kind}\nmetadata: {{name: web, namespace: x}}\n{body}"


def _indent(text: str, n: int) -> str:
    return "\n" + "\n".join(" " * n + line if line else line for line in text.strip("\n").splitlines()) + "\n"


WORKLOADS = [
    pytest.param("Deployment", "apps/v1", id="deployment"),
    pytest.param("StatefulSet", "apps/v1", id="statefulset"),
    pytest.param("DaemonSet", "apps/v1", id="daemonset"),
    pytest.param("ReplicaSet", "apps/v1", id="replicaset"),
    pytest.param("ReplicationController", "v1", id="replicationcontroller"),
    pytest.param("Job", "batch/v1", id="job"),
    pytest.param("CronJob", "batch/v1", id="cronjob"),
]


@pytest.mark.parametrize(("kind", "api"), WORKLOADS)
def test_workloads_become_template_pods(kind: str, api: str) -> None:
    (pod,) = load(workload(kind, api)).model.pods
    assert (pod.metadata.namespace, pod.metadata.name) == ("x", "web")
    assert pod.metadata.labels == {"app": "web"}
    assert pod.metadata.annotations == {WORKLOAD_ANNOTATION: f"{kind}/web"}
    assert [(p.container_port, p.name) for p in pod.container_ports()] == [(8080, "http")]
    assert pod.ips() == ()
    assert pod.spec.node_name is None


def test_a_host_network_workload_stays_host_network() -> None:
    text = workload("DaemonSet", "apps/v1").replace("hostNetwork: false", "hostNetwork: true")
    (pod,) = load(text).model.pods
    assert pod.spec.host_network


@pytest.mark.parametrize(
    ("kind", "api", "field"),
    [
        pytest.param(
            "Deployment",
            "apps/v1",
            "spec.template.spec.containers[0].ports[0].containerPort",
            id="deployment",
        ),
        pytest.param(
            "CronJob",
            "batch/v1",
            "spec.jobTemplate.spec.template.spec.containers[0].ports[0].containerPort",
            id="cronjob",
        ),
    ],
)
def test_template_problems_point_into_the_workload(kind: str, api: str, field: str) -> None:
    text = workload(kind, api).replace("8080", "0").replace("app: web", "app: -web")
    found = problems(text)
    assert [(p.obj, p.field) for p in found] == sorted(
        [
            (f"{kind} x/web", field),
            (f"{kind} x/web", field.split(".spec.containers", maxsplit=1)[0] + ".metadata.labels[app]"),
        ]
    )


def test_a_workload_without_a_template_is_a_problem() -> None:
    found = problems("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {replicas: 1}\n")
    assert [(p.obj, p.field, p.message) for p in found] == [
        ("Deployment default/web", "spec.template", "required value")
    ]


def test_unknown_kinds_are_skipped_with_a_note() -> None:
    result = load(
        POLICY
        + dedent(
            """
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: web, namespace: x}
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: db}
        ---
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: cfg, namespace: x}
        ---
        apiVersion: example.com/v1
        kind: Widget
        metadata: {name: w}
        spec: {anything: [goes]}
        ---
        apiVersion: v1
        kind: ServiceList
        items: []
        """
        )
    )
    assert result.notes == (
        "f1.yaml: skipped 2 Service objects (Stockade does not use this kind): x/web, default/db",
        "f1.yaml: skipped 1 ConfigMap object (Stockade does not use this kind): x/cfg",
        "f1.yaml: skipped 1 Widget object (Stockade does not use this kind): default/w",
        "f1.yaml: skipped 1 ServiceList object (Stockade does not use this kind): document 6",
    )
    assert len(result.model.policies) == 1


def test_host_bits_in_an_ipblock_give_a_note() -> None:
    text = POLICY.replace(
        "spec: {podSelector: {}}", "spec: {podSelector: {}, egress: [{to: [{ipBlock: {cidr: 10.0.0.1/8}}]}]}"
    )
    result = load(text)
    assert result.notes == (
        "f1.yaml: NetworkPolicy x/deny-all: spec.egress[0].to[0].ipBlock.cidr: 10.0.0.1/8 has host bits set; "
        "read as 10.0.0.0/8, as the API server does",
    )


# --- duplicates --------------------------------------------------------------------------------------------


def test_a_duplicate_in_one_file_names_both_places() -> None:
    found = problems(POLICY + "---\n" + POLICY)
    assert found == [
        Problem(
            "f1.yaml",
            "NetworkPolicy x/deny-all",
            "",
            "duplicate NetworkPolicy x/deny-all: also defined in f1.yaml, document 1",
        )
    ]


def test_a_duplicate_across_files_names_both_files() -> None:
    found = problems(POLICY, POLICY.replace("namespace: x", "namespace: x, labels: {v: '2'}"))
    assert [str(p) for p in found] == [
        "f2.yaml: NetworkPolicy x/deny-all: "
        "duplicate NetworkPolicy x/deny-all: also defined in f1.yaml, document 1"
    ]


def test_a_workload_and_a_pod_of_one_name_collide() -> None:
    pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: x}\n"
    found = problems(workload("Deployment", "apps/v1") + "---\n" + pod)
    assert [p.message for p in found] == [
        "duplicate Pod x/web: also defined in f1.yaml, document 1 (Deployment x/web)"
    ]


@pytest.mark.parametrize(
    "second",
    [
        pytest.param(POLICY.replace("namespace: x", "namespace: z"), id="other-namespace"),
        pytest.param(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: deny-all, namespace: x}\n", id="other-kind"
        ),
        pytest.param("apiVersion: v1\nkind: Namespace\nmetadata: {name: deny-all}\n", id="cluster-scoped"),
    ],
)
def test_same_name_is_no_duplicate_in_another_namespace_or_kind(second: str) -> None:
    model = load(POLICY, second).model
    kept = [*model.policies, *model.pods, *model.namespaces]
    assert len(kept) == 2, "both objects are kept, neither replaces the other"


# --- bad documents -----------------------------------------------------------------------------------------


def test_a_yaml_syntax_error_names_file_and_line() -> None:
    # Line 8 opens a flow mapping that line 9 fails to close.
    (problem,) = problems(POLICY + "---\nkind: Pod\nmetadata: {name: a\n  labels: x\n")
    assert (problem.file, problem.obj, problem.field) == ("f1.yaml", "document 2", "")
    assert problem.message == (
        "YAML syntax error at line 9, column 9: did not find expected ',' or '}' "
        "(while parsing a flow mapping at line 8)"
    )


def test_a_yaml_syntax_error_does_not_hide_other_files() -> None:
    found = problems("a: [\n", POLICY.replace("deny-all", "Deny"))
    assert [(p.file, p.field) for p in found] == [("f1.yaml", ""), ("f2.yaml", "metadata.name")]


def test_a_duplicate_key_is_a_problem() -> None:
    text = POLICY.replace(
        "spec: {podSelector: {}}", "spec:\n  podSelector: {}\n  ingress: []\n  ingress: [{}]"
    )
    (problem,) = problems(text)
    assert (problem.obj, problem.message) == (
        "document 1",
        'line 8: duplicate key "ingress" (only the last would be kept)',
    )


@pytest.mark.parametrize(
    ("text", "obj", "field", "fragment"),
    [
        pytest.param(
            "- a\n- b\n",
            "document 1",
            "",
            "must be an object with apiVersion and kind, got a list",
            id="list",
        ),
        pytest.param("just text\n", "document 1", "", 'got a string ("just text")', id="scalar"),
        pytest.param(
            "apiVersion: v1\nmetadata: {name: a}\n", "document 1", "kind", "required value", id="no-kind"
        ),
        pytest.param(
            "kind: Pod\nmetadata: {name: a}\n", "document 1", "apiVersion", "required value", id="no-api"
        ),
        pytest.param(
            "apiVersion: v1\nkind: 3\n",
            "document 1",
            "kind",
            "non-empty string, got an integer",
            id="kind-int",
        ),
        pytest.param(
            POLICY.replace("networking.k8s.io/v1", "extensions/v1beta1"),
            "NetworkPolicy x/deny-all",
            "apiVersion",
            '"extensions/v1beta1": NetworkPolicy is read as networking.k8s.io/v1 '
            "(extensions/v1beta1 was removed in Kubernetes 1.16)",
            id="extensions-v1beta1",
        ),
        pytest.param(
            POLICY.replace("networking.k8s.io/v1", "networking.k8s.io/v1beta1"),
            "NetworkPolicy x/deny-all",
            "apiVersion",
            "unsupported value",
            id="networking-v1beta1",
        ),
        pytest.param(
            workload("Deployment", "apps/v1beta2"),
            "Deployment x/web",
            "apiVersion",
            "apps/v1beta2 was removed in Kubernetes 1.16",
            id="apps-v1beta2",
        ),
        pytest.param(
            workload("CronJob", "batch/v1beta1"),
            "CronJob x/web",
            "apiVersion",
            "removed in Kubernetes 1.25",
            id="cronjob-v1beta1",
        ),
        pytest.param(
            "apiVersion: v1\nkind: List\nitems: {a: 1}\n", "document 1", "items", "must be a list", id="items"
        ),
        pytest.param(
            POLICY.replace("kind: NetworkPolicy", "kind: Networkpolicy"),
            "Networkpolicy x/deny-all",
            "kind",
            'unsupported value "Networkpolicy": kinds are case-sensitive (did you mean "NetworkPolicy"?)',
            id="kind-case",
        ),
        pytest.param(
            "apiVersion: v1\nkind: List\nitems: [{apiVersion: v1, kind: Pod, metadata: {}}]\n",
            "document 1, items[0]",
            "metadata.name",
            "required value",
            id="unnamed-item",
        ),
        pytest.param(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: Prod}\n",
            "Namespace Prod",
            "metadata.name",
            "RFC 1123 label",
            id="namespace-name",
        ),
        pytest.param(
            POLICY.replace("podSelector: {}", "podSelector: {matchLabels: {env: on}}"),
            "NetworkPolicy x/deny-all",
            "spec.podSelector.matchLabels[env]",
            "got a boolean (true); YAML reads unquoted y/n/yes/no/on/off/true/false as booleans",
            id="yaml-1.1-boolean",
        ),
        pytest.param(
            POLICY.replace("podSelector: {}", "podSelector: {matchLabels: {env: y}}"),
            "NetworkPolicy x/deny-all",
            "spec.podSelector.matchLabels[env]",
            "got a boolean (true); YAML reads unquoted y/n/yes/no/on/off/true/false as booleans",
            id="unquoted-y-is-a-boolean-as-kubectl-reads-it",
        ),
    ],
)
def test_bad_documents(text: str, obj: str, field: str, fragment: str) -> None:
    (problem,) = problems(text)
    assert (problem.file, problem.obj, problem.field) == ("f1.yaml", obj, field)
    assert fragment in problem.message, problem.message


def test_every_problem_of_every_file_is_reported_at_once() -> None:
    first = """
    apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: a, namespace: x}
    spec:
      podSelector: {}
      ingress:
      - from: [{ipBlock: {cidr: 10.0.0.0/33}}]
        ports: [{port: 0}]
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: p, namespace: x}
    status: {podIP: nope}
    """
    second = """
    kind: Thing
    ---
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: web, namespace: x}
    spec: {template: {metadata: {labels: {app: yes}}}}
    """
    found = problems(first, second)
    assert [(p.file, p.obj, p.field) for p in found] == [
        ("f1.yaml", "NetworkPolicy x/a", "spec.ingress[0].from[0].ipBlock.cidr"),
        ("f1.yaml", "NetworkPolicy x/a", "spec.ingress[0].ports[0].port"),
        ("f1.yaml", "Pod x/p", "status.podIP"),
        ("f2.yaml", "Deployment x/web", "spec.template.metadata.labels[app]"),
        ("f2.yaml", "document 1", "apiVersion"),
    ]


# --- determinism and real data -----------------------------------------------------------------------------


def test_the_model_is_sorted_and_independent_of_input_order() -> None:
    texts = [
        POLICY.replace("deny-all", "b"),
        POLICY.replace("deny-all", "a").replace("namespace: x", 'namespace: "y"'),
        POLICY.replace("deny-all", "a"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: z, namespace: a}\n",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: b, namespace: b}\n",
        "apiVersion: v1\nkind: Node\nmetadata: {name: n2}\n---\n"
        "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\n",
    ]
    forward = load_manifests([(f"f{i}.yaml", t) for i, t in enumerate(texts)]).model
    backward = load_manifests([(f"f{i}.yaml", t) for i, t in reversed(list(enumerate(texts)))]).model
    assert forward == backward
    assert [p.key for p in forward.policies] == ["x/a", "x/b", "y/a"]
    assert [p.key for p in forward.pods] == ["a/z", "b/b"]
    assert [n.metadata.name for n in forward.nodes] == ["n1", "n2"]


def test_the_upstream_e2e_policies_all_load() -> None:
    cases = yaml.safe_load((DATA / "upstream-netpol.yaml").read_text())
    policies = [p for case in cases for step in case["steps"] for p in step["policies"]]
    docs = []
    for i, original in enumerate(policies):
        doc = json.loads(json.dumps(original))
        doc["metadata"]["name"] = f"{doc['metadata']['name']}-{i}"
        docs.append(doc)
    # The data names pod addresses symbolically; any concrete address will do for loading.
    # PyYAML's dumper writes the string "y" unquoted, which kubectl (and Stockade) read as a
    # boolean; JSON keeps strings strings.
    text = re.sub(r"\{\w+/\w+\}/host", "10.0.0.1/32", "\n".join(json.dumps(d) for d in docs))
    text = re.sub(r"\{\w+/\w+\}/4", "0.0.0.0/4", text)
    result = load_manifests([("upstream.yaml", text)])
    assert len(result.model.policies) == len(policies) > 50
    assert result.notes == ()


# --- identity and timestamps -------------------------------------------------------------------------

PODS_WITH_AND_WITHOUT_UID = """
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, uid: 0f9a3c52-1111-4c7e-8d1e-000000000001}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: x}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: x}
spec: {template: {metadata: {labels: {app: web}}, spec: {containers: [{name: c}]}}}
"""


def test_pods_without_uid_get_a_stable_synthetic_one() -> None:
    first, again = load(PODS_WITH_AND_WITHOUT_UID).model, load(PODS_WITH_AND_WITHOUT_UID).model
    uids = {p.key: p.metadata.uid for p in first.pods}
    assert uids["x/a"] == "0f9a3c52-1111-4c7e-8d1e-000000000001"  # a real one is kept
    assert uids == {p.key: p.metadata.uid for p in again.pods}  # the same files, the same identities
    assert len(set(uids.values())) == 3 and all(uids.values())
    renamed = load(PODS_WITH_AND_WITHOUT_UID.replace("name: b,", "name: c,")).model
    assert {p.key: p.metadata.uid for p in renamed.pods}["x/c"] != uids["x/b"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param("'2026-01-01'", "must be an RFC 3339 time", id="date-only"),
        pytest.param("'2026-01-01 10:00:00'", "must be an RFC 3339 time", id="space-no-zone"),
        pytest.param("2026-01-01T10:00:00", "time zone", id="yaml-timestamp-no-zone"),
        pytest.param("1767261600", "must be an RFC 3339 time string", id="unix-seconds"),
    ],
)
def test_bad_timestamps_are_refused(value: str, message: str) -> None:
    for field in ("creationTimestamp", "deletionTimestamp"):
        (found,) = problems(
            f"apiVersion: v1\nkind: Pod\nmetadata: {{name: a, namespace: x, {field}: {value}}}\n"
        )
        assert found.obj == "Pod x/a" and found.field == f"metadata.{field}" and message in found.message


def test_good_timestamps_are_read_as_utc() -> None:
    text = "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x, creationTimestamp: %s}\n"
    stamps = [
        load(text % v).model.pods[0].metadata.creation_timestamp
        for v in ("2026-01-01T10:00:00Z", "'2026-01-01T12:00:00+02:00'")
    ]
    assert stamps[0] == stamps[1] and stamps[0] is not None and stamps[0].utcoffset() is not None
