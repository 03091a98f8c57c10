"""The Helm chart, rendered by the pinned helm (tests/tools): `helm lint --strict`, the objects it
renders with the default values and with every option values.yaml documents (one case per option,
each asserting the option's effect), and values the schema must refuse with a message naming the
field. Needs no cluster; test_chart_apiserver.py sends the rendered objects to a real API server."""

# One option per row of CASES reads better than wrapped rows:
# ruff: noqa: E501

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.chart import CHART, Obj, cleanup_daemonset, find, helm, kinds, render

DIGEST = "sha256:" + "ab" * 32


def _ds(objs: list[Obj]) -> Obj:
    return find(objs, "DaemonSet")


def _pod(objs: list[Obj]) -> Obj:
    spec: Obj = _ds(objs)["spec"]["template"]["spec"]
    return spec


def _agent(objs: list[Obj]) -> Obj:
    c: Obj = next(c for c in _pod(objs)["containers"] if c["name"] == "agent")
    return c


def _init(objs: list[Obj], name: str = "install-cni") -> Obj:
    c: Obj = next(c for c in _pod(objs)["initContainers"] if c["name"] == name)
    return c


def _cleanup_args(objs: list[Obj]) -> list[str]:
    args: list[str] = cleanup_daemonset(objs)["spec"]["template"]["spec"]["initContainers"][0]["args"]
    return args


def _host_paths(objs: list[Obj]) -> dict[str, str]:
    return {v["name"]: v["hostPath"]["path"] for v in _pod(objs)["volumes"] if "hostPath" in v}


def test_lint_strict() -> None:
    out = helm("lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in out.stdout


def test_defaults(tmp_path: Path) -> None:
    objs = render(tmp_path, {})
    assert kinds(objs) == sorted(
        [
            *("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Service", "DaemonSet"),
            *("ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Job"),  # the uninstall hook
        ]
    )
    pod = _pod(objs)
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "Default"
    assert pod["priorityClassName"] == "system-node-critical"
    assert pod["tolerations"] == [{"operator": "Exists"}]
    assert pod["serviceAccountName"] == "stk-stockade"
    assert "--no-overlay" not in _agent_args(objs)  # the overlay is on unless turned off
    agent = _agent(objs)
    sc = agent["securityContext"]
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW"]}
    assert sc["privileged"] is False and sc["allowPrivilegeEscalation"] is False
    assert agent["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert agent["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert {m["mountPath"] for m in agent["volumeMounts"]} == {"/var/lib/stockade", "/run/stockade", "/tmp"}
    assert agent["image"] == "lab.stockade.io/stockade:0.1.0"
    assert agent["args"][:2] == ["agent", "--node=$(NODE_NAME)"]
    assert "--cni-socket=/run/stockade/cni.sock" in agent["args"]
    init = _init(objs)
    assert init["command"] == ["stockade-cni"] and init["args"][:2] == ["install", "--node-name=$(NODE_NAME)"]
    assert "capabilities" in init["securityContext"] and "add" not in init["securityContext"]["capabilities"]
    assert _host_paths(objs) == {
        "state": "/var/lib/stockade",
        "run": "/run/stockade",
        "cni-bin": "/opt/cni/bin",
        "cni-conf": "/etc/cni/net.d",
        "cni-runtime": "/opt/stockade",
    }
    runtime = _init(objs, "install-runtime")
    assert [c["name"] for c in pod["initContainers"]] == ["install-runtime", "install-cni"]
    assert runtime["args"] == ["install-runtime", "--dest=/host/opt/stockade", "--host-dir=/opt/stockade"]
    assert "--python=/opt/stockade/python" in init["args"]
    assert "--runtime-dir=/host/opt/stockade" in _cleanup_args(objs)
    assert _ds(objs)["spec"]["updateStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 1},
    }
    role = find(objs, "ClusterRole")
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["pods", "namespaces", "nodes"], "verbs": ["get", "list", "watch"]},
        {
            "apiGroups": ["networking.k8s.io"],
            "resources": ["networkpolicies"],
            "verbs": ["get", "list", "watch"],
        },
        {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
    ]
    hooks = [o for o in objs if "helm.sh/hook" in o["metadata"].get("annotations", {})]
    assert {o["metadata"]["annotations"]["helm.sh/hook"] for o in hooks} == {"pre-delete"}
    assert "--keep-state" not in _cleanup_args(objs)


Check = Callable[[list[Obj]], None]


def _has(fn: Callable[[list[Obj]], Any], expected: Any) -> Check:
    def check(objs: list[Obj]) -> None:
        assert fn(objs) == expected

    return check


def _contains(fn: Callable[[list[Obj]], Any], *items: Any) -> Check:
    def check(objs: list[Obj]) -> None:
        got = fn(objs)
        for item in items:
            assert item in got, f"{item!r} not in {got!r}"

    return check


def _all(*checks: Check) -> Check:
    def check(objs: list[Obj]) -> None:
        for c in checks:
            c(objs)

    return check


def _absent(kind: str) -> Check:
    return lambda objs: None if kind not in kinds(objs) else pytest.fail(f"{kind} rendered")


def _agent_args(objs: list[Obj]) -> list[str]:
    args: list[str] = _agent(objs)["args"]
    return args


def _init_args(objs: list[Obj]) -> list[str]:
    args: list[str] = _init(objs)["args"]
    return args


# (id, values, check): every option values.yaml documents (test_every_option_has_a_case checks that).
CASES: list[tuple[str, Obj, Check]] = [
    ("image.tag", {"image": {"tag": "v9"}}, _has(lambda o: _agent(o)["image"], "lab.stockade.io/stockade:v9")),
    ("image.repository", {"image": {"repository": "r.example/s"}}, _has(lambda o: _init(o)["image"], "r.example/s:0.1.0")),
    ("image.digest", {"image": {"digest": DIGEST}}, _has(lambda o: _agent(o)["image"], f"lab.stockade.io/stockade@{DIGEST}")),
    ("image.pullPolicy", {"image": {"pullPolicy": "Always"}}, _has(lambda o: _agent(o)["imagePullPolicy"], "Always")),
    ("imagePullSecrets", {"imagePullSecrets": [{"name": "reg"}]}, _has(lambda o: _pod(o)["imagePullSecrets"], [{"name": "reg"}])),
    ("nameOverride", {"nameOverride": "sto"}, _has(lambda o: _ds(o)["metadata"]["name"], "stk-sto")),
    ("fullnameOverride", {"fullnameOverride": "np"}, _all(
        _has(lambda o: _ds(o)["metadata"]["name"], "np"), _has(lambda o: find(o, "Job")["metadata"]["name"], "np-uninstall"))),
    ("agent.port", {"agent": {"port": 9999}}, _all(
        _contains(_agent_args, "--listen=0.0.0.0:9999"),
        _has(lambda o: _agent(o)["ports"][0]["containerPort"], 9999),
        _has(lambda o: find(o, "Service")["spec"]["ports"][0]["port"], 9999))),
    ("agent.debounceMs", {"agent": {"debounceMs": 50}}, _contains(_agent_args, "--debounce-ms=50")),
    ("agent.checkIntervalSeconds", {"agent": {"checkIntervalSeconds": 5}}, _contains(_agent_args, "--check-interval=5")),
    ("agent.cniTimeoutSeconds", {"agent": {"cniTimeoutSeconds": 3}}, _contains(_agent_args, "--cni-timeout=3")),
    ("agent.overlay", {"agent": {"overlay": False}}, _contains(_agent_args, "--no-overlay")),
    ("agent.extraArgs", {"agent": {"extraArgs": ["--x=1"]}}, _has(lambda o: _agent_args(o)[-1], "--x=1")),
    ("agent.resources", {"agent": {"resources": {"requests": {"cpu": "1"}}}}, _has(lambda o: _agent(o)["resources"], {"requests": {"cpu": "1", "memory": "128Mi"}, "limits": {"memory": "512Mi"}})),
    ("agent.livenessProbe", {"agent": {"livenessProbe": {"periodSeconds": 7}}}, _has(lambda o: _agent(o)["livenessProbe"]["periodSeconds"], 7)),
    ("agent.readinessProbe", {"agent": {"readinessProbe": {"failureThreshold": 9}}}, _has(lambda o: _agent(o)["readinessProbe"]["failureThreshold"], 9)),
    ("logging.level", {"logging": {"level": "DEBUG"}}, _contains(_agent_args, "--log-level=DEBUG")),
    ("cni.install", {"cni": {"install": False}}, _all(
        _has(lambda o: "initContainers" in _pod(o), False),
        _has(lambda o: sorted(_host_paths(o)), ["run", "state"]),
        _contains(lambda o: [v["name"] for v in cleanup_daemonset(o)["spec"]["template"]["spec"]["volumes"]], "cni-bin", "cni-runtime"))),
    ("cni.binDir", {"cni": {"binDir": "/usr/libexec/cni"}}, _has(lambda o: _host_paths(o)["cni-bin"], "/usr/libexec/cni")),
    ("cni.confDir", {"cni": {"confDir": "/etc/cni/conf.d"}}, _has(lambda o: _host_paths(o)["cni-conf"], "/etc/cni/conf.d")),
    ("cni.confName", {"cni": {"confName": "05-s.conflist"}}, _all(
        _contains(_init_args, "--conf-name=05-s.conflist"), _contains(_cleanup_args, "--cni-conf-name=05-s.conflist"))),
    ("cni.networkName", {"cni": {"networkName": "podnet"}}, _contains(_init_args, "--network-name=podnet")),
    ("cni.mtu", {"cni": {"mtu": 1400}}, _contains(_init_args, "--mtu=1400")),
    ("cni.agentTimeoutSeconds", {"cni": {"agentTimeoutSeconds": 20}}, _contains(_init_args, "--agent-timeout=20")),
    ("cni.runtimeDir", {"cni": {"runtimeDir": "/var/lib/stockade-rt"}}, _all(
        _has(lambda o: _host_paths(o)["cni-runtime"], "/var/lib/stockade-rt"),
        _contains(lambda o: _init(o, "install-runtime")["args"], "--host-dir=/var/lib/stockade-rt"),
        _contains(_init_args, "--python=/var/lib/stockade-rt/python"))),
    ("cni.resources", {"cni": {"resources": {"limits": {"memory": "1Gi"}}}}, _has(lambda o: _init(o)["resources"]["limits"], {"memory": "1Gi"})),
    ("hostPaths.state", {"hostPaths": {"state": "/data/stk"}}, _all(
        _has(lambda o: _host_paths(o)["state"], "/data/stk"),
        _contains(_init_args, "--ipam-dir=/data/stk/ipam"), _contains(_cleanup_args, "--state-dir=/data/stk"))),
    ("hostPaths.run", {"hostPaths": {"run": "/run/stk"}}, _all(
        _contains(_agent_args, "--cni-socket=/run/stk/cni.sock"), _contains(_init_args, "--agent-socket=/run/stk/cni.sock"),
        _contains(_cleanup_args, "--run-dir=/run/stk"))),
    ("overlay.device", {"overlay": {"device": "vx0"}}, _contains(_cleanup_args, "--overlay-device=vx0")),
    ("serviceAccount.create+name", {"serviceAccount": {"create": False, "name": "mine"}}, _all(
        _has(lambda o: [x["metadata"]["name"] for x in o if x["kind"] == "ServiceAccount"], ["stk-stockade-uninstall"]),
        _has(lambda o: _pod(o)["serviceAccountName"], "mine"),
        _has(lambda o: find(o, "ClusterRoleBinding")["subjects"][0]["name"], "mine"))),
    ("serviceAccount.annotations", {"serviceAccount": {"annotations": {"a": "b"}}}, _has(
        lambda o: find(o, "ServiceAccount", "stk-stockade")["metadata"]["annotations"], {"a": "b"})),
    ("rbac.create", {"rbac": {"create": False}}, _all(_absent("ClusterRole"), _absent("ClusterRoleBinding"))),
    ("metrics.service.enabled", {"metrics": {"service": {"enabled": False}}}, _absent("Service")),
    ("metrics.serviceMonitor", {"metrics": {"serviceMonitor": {"enabled": True, "interval": "15s", "scrapeTimeout": "5s", "labels": {"release": "prom"}}}},
     _all(_has(lambda o: find(o, "ServiceMonitor")["spec"]["endpoints"][0]["interval"], "15s"),
          _has(lambda o: find(o, "ServiceMonitor")["spec"]["endpoints"][0]["scrapeTimeout"], "5s"),
          _has(lambda o: find(o, "ServiceMonitor")["metadata"]["labels"]["release"], "prom"))),
    ("nodeSelector", {"nodeSelector": {"role": "x"}}, _all(
        _has(lambda o: _pod(o)["nodeSelector"], {"kubernetes.io/os": "linux", "role": "x"}),
        _has(lambda o: cleanup_daemonset(o)["spec"]["template"]["spec"]["nodeSelector"]["role"], "x"))),
    ("tolerations", {"tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}]},
     _has(lambda o: _pod(o)["tolerations"], [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}])),
    ("affinity", {"affinity": {"nodeAffinity": {}}}, _has(lambda o: _pod(o)["affinity"], {"nodeAffinity": {}})),
    ("priorityClassName", {"priorityClassName": "high"}, _has(lambda o: _pod(o)["priorityClassName"], "high")),
    ("podAnnotations", {"podAnnotations": {"a": "1"}}, _has(lambda o: _ds(o)["spec"]["template"]["metadata"]["annotations"], {"a": "1"})),
    ("podLabels", {"podLabels": {"team": "net"}}, _has(lambda o: _ds(o)["spec"]["template"]["metadata"]["labels"]["team"], "net")),
    ("updateStrategy", {"updateStrategy": {"type": "OnDelete", "rollingUpdate": None}}, _has(lambda o: _ds(o)["spec"]["updateStrategy"]["type"], "OnDelete")),
    ("terminationGracePeriodSeconds", {"terminationGracePeriodSeconds": 5}, _has(lambda o: _pod(o)["terminationGracePeriodSeconds"], 5)),
    ("uninstall.cleanup", {"uninstall": {"cleanup": False}}, _all(_absent("Job"), _absent("Role"), _absent("ConfigMap"))),
    ("uninstall.keepState", {"uninstall": {"keepState": True}}, _contains(_cleanup_args, "--keep-state")),
    ("uninstall.timeoutSeconds", {"uninstall": {"timeoutSeconds": 60}}, _contains(
        lambda o: find(o, "Job")["spec"]["template"]["spec"]["containers"][0]["args"], "--timeout=60")),
]  # fmt: skip


@pytest.mark.parametrize(("values", "check"), [(v, c) for _, v, c in CASES], ids=[i for i, _, _ in CASES])
def test_option(tmp_path: Path, values: Obj, check: Check) -> None:
    check(render(tmp_path, values))


def _leaves(tree: Obj, prefix: str = "") -> set[str]:
    out: set[str] = set()
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if (
            isinstance(value, dict)
            and value
            and key not in ("resources", "nodeSelector", "livenessProbe", "readinessProbe", "rollingUpdate")
        ):
            out |= _leaves(value, f"{path}.")
        else:
            out.add(path)
    return out


def test_every_option_has_a_case() -> None:
    documented = _leaves(yaml.safe_load((CHART / "values.yaml").read_text()))
    covered: set[str] = set()
    for _, values, _ in CASES:
        covered |= _leaves(values)
    # updateStrategy.rollingUpdate is set to null by its case (OnDelete takes none).
    missing = sorted(
        d for d in documented if d not in covered and not any(c.startswith(d + ".") for c in covered)
    )
    assert missing == [], f"options without a test case: {missing}"


BAD: list[tuple[str, Obj, str]] = [
    ("port-string", {"agent": {"port": "9542"}}, "at '/agent/port': got string, want integer"),
    ("port-range", {"agent": {"port": 70000}}, "/agent/port"),
    ("misspelt-key", {"agnet": {"port": 1}}, "'agnet' not allowed"),
    ("misspelt-nested", {"cni": {"bindir": "/x"}}, "at '/cni': additional properties 'bindir' not allowed"),
    ("relative-path", {"cni": {"binDir": "opt/cni/bin"}}, "/cni/binDir"),
    ("log-level", {"logging": {"level": "TRACE"}}, "/logging/level"),
    (
        "surge",
        {"updateStrategy": {"rollingUpdate": {"maxSurge": 1}}},
        "/updateStrategy/rollingUpdate/maxSurge",
    ),
    ("digest", {"image": {"digest": "latest"}}, "/image/digest"),
    ("device-name", {"overlay": {"device": "a-name-longer-than-15"}}, "/overlay/device"),
    ("conf-name", {"cni": {"confName": "stockade.conf"}}, "/cni/confName"),
    ("pull-policy", {"image": {"pullPolicy": "sometimes"}}, "/image/pullPolicy"),
    ("timeout", {"uninstall": {"timeoutSeconds": 5}}, "/uninstall/timeoutSeconds"),
    ("mtu", {"cni": {"mtu": 100}}, "/cni/mtu"),
    ("runtime-dir-top-level", {"cni": {"runtimeDir": "/opt"}}, "/cni/runtimeDir"),
]


@pytest.mark.parametrize(("values", "message"), [(v, m) for _, v, m in BAD], ids=[i for i, _, _ in BAD])
def test_schema_refuses_with_the_field_named(tmp_path: Path, values: Obj, message: str) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text(yaml.safe_dump(values))
    out = helm("template", "stk", str(CHART), values=file, check=False)
    assert out.returncode != 0
    assert "values don't meet the specifications of the schema" in out.stderr
    assert message in out.stderr, out.stderr


def test_plugin_must_wait_longer_than_the_agent(tmp_path: Path) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text(yaml.safe_dump({"cni": {"agentTimeoutSeconds": 5}}))
    out = helm("template", "stk", str(CHART), values=file, check=False)
    assert out.returncode != 0
    assert "cni.agentTimeoutSeconds (5) must exceed agent.cniTimeoutSeconds (10)" in out.stderr, out.stderr
