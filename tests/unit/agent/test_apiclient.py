"""controller.agent.apiclient: credentials from a kubeconfig and from a pod's ServiceAccount, and
requests as a local HTTP server sees them (the real API server: tests/cluster/test_agent.py)."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import kopf
import pytest
import yaml

from controller.agent import apiclient
from controller.agent.apiclient import ApiClient, Credentials, from_kubeconfig, load_credentials
from controller.errors import ApiError, UsageError

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def kubeconfig(path: Path, *, cluster: dict[str, Any], user: dict[str, Any]) -> Path:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "other", "cluster": {"server": "https://wrong:1"}},
            {"name": "c", "cluster": cluster},
        ],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "ctx",
    }
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize(
    ("cluster", "user", "expected"),
    [
        pytest.param(
            {"server": "https://10.0.0.1:6443", "certificate-authority": "pki/ca.crt"},
            {"client-certificate": "pki/me.crt", "client-key": "/abs/me.key"},
            {
                "ca_path": "{dir}/pki/ca.crt",
                "certificate_path": "{dir}/pki/me.crt",
                "private_key_path": "/abs/me.key",
            },
            id="files, relative to the kubeconfig",
        ),
        pytest.param(
            {"server": "https://h:6443", "certificate-authority-data": "Q0E="},
            {"client-certificate-data": "Q0VSVA==", "client-key-data": "S0VZ"},
            {"ca_data": "Q0E=", "certificate_data": "Q0VSVA==", "private_key_data": "S0VZ"},
            id="inline data, as the lab writes it",
        ),
        pytest.param(
            {"server": "https://h:6443", "insecure-skip-tls-verify": True},
            {"token": "t0k"},
            {"token": "t0k", "insecure": True},
            id="token",
        ),
        pytest.param(
            {"server": "https://h:6443"},
            {"username": "admin", "password": "pw"},
            {"username": "admin", "password": "pw"},
            id="basic",
        ),
    ],
)
def test_a_kubeconfig_gives_its_current_context(
    tmp_path: Path, cluster: dict[str, Any], user: dict[str, Any], expected: dict[str, Any]
) -> None:
    info = from_kubeconfig(kubeconfig(tmp_path / "config", cluster=cluster, user=user)).current()
    assert info.server == cluster["server"]
    got = {key: getattr(info, key) for key in expected}
    assert got == {k: v.format(dir=tmp_path) if isinstance(v, str) else v for k, v in expected.items()}


def test_a_kubeconfig_token_file_is_read_at_every_login(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("first\n")
    creds = from_kubeconfig(
        kubeconfig(tmp_path / "config", cluster={"server": "https://h:1"}, user={"tokenFile": "token"})
    )
    assert creds.current().token == "first"
    (tmp_path / "token").write_text("rotated")
    assert creds.current().token == "rotated"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        pytest.param(None, "cannot read kubeconfig", id="absent"),
        pytest.param(
            "current-context: nowhere\ncontexts: []\n", "no entry named 'nowhere'", id="no such context"
        ),
        pytest.param(": [", "cannot read kubeconfig", id="not YAML"),
    ],
)
def test_an_unusable_kubeconfig_is_a_usage_error_naming_it(
    tmp_path: Path, text: str | None, says: str
) -> None:
    path = tmp_path / "config"
    if text is not None:
        path.write_text(text)
    with pytest.raises(UsageError, match=str(path)) as exc:
        from_kubeconfig(path)
    assert says in str(exc.value)


def test_a_credential_plugin_is_refused_by_name(tmp_path: Path) -> None:
    path = kubeconfig(
        tmp_path / "config", cluster={"server": "https://h:1"}, user={"exec": {"command": "aws"}}
    )
    with pytest.raises(UsageError, match=r"credential plugins \(exec\)"):
        from_kubeconfig(path)


@pytest.fixture
def service_account(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("sa-token\n")
    (sa / "ca.crt").write_text(PEM)
    monkeypatch.setattr(apiclient, "SERVICE_ACCOUNT", sa)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    return sa


def test_in_cluster_reads_the_service_account_and_the_rotated_token(service_account: Path) -> None:
    creds = load_credentials(None)
    info = creds.current()
    assert (info.server, info.ca_path, info.token) == (
        "https://[fd00::1]:443",
        str(service_account / "ca.crt"),
        "sa-token",
    )
    (service_account / "token").write_text("after-kubelet-rotated-it")
    assert creds.current().token == "after-kubelet-rotated-it"


def test_a_kubeconfig_given_wins_over_the_service_account(service_account: Path, tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "config", cluster={"server": "https://given:1"}, user={"token": "t"})
    assert load_credentials(str(path)).current().server == "https://given:1"


def test_outside_a_pod_the_default_kubeconfig_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    path = kubeconfig(tmp_path / "config", cluster={"server": "https://default:1"}, user={"token": "t"})
    monkeypatch.setenv("KUBECONFIG", str(path))
    assert load_credentials(None).current().server == "https://default:1"
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    with pytest.raises(UsageError, match="no credentials for the API server"):
        load_credentials(None)


# --- requests, as a local HTTP server receives them ---------------------------------------------


class Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a connection can serve several requests
    seen: ClassVar[list[dict[str, Any]]] = []
    ports: ClassVar[list[int]] = []

    def _answer(self) -> None:
        self.ports.append(self.client_address[1])
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.seen.append(
            {
                "method": self.command,
                "path": self.path,
                "auth": self.headers.get("Authorization"),
                "accept": self.headers.get("Accept"),
                "body": json.loads(body) if body else None,
            }
        )
        status = 403 if "refused" in self.path else 200
        answer = b'{"kind":"Status","reason":"Forbidden"}' if status == 403 else b'{"ok":true}'
        self.send_response(status)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_GET = do_POST = _answer

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    Recorder.seen, Recorder.ports = [], []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/prefix"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_requests_carry_the_current_token_query_and_body(server: str, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("one")
    api = ApiClient(Credentials(kopf.ConnectionInfo(server=server), token_file=token))
    assert api.request("GET", "/api/v1/pods", query=[("limit", "2"), ("continue", "a b")], accept="x/y") == {
        "ok": True
    }
    token.write_text("two")
    api.request("POST", "/api/v1/namespaces/n/events", body={"reason": "R"})
    assert Recorder.seen == [
        {
            "method": "GET",
            "path": "/prefix/api/v1/pods?limit=2&continue=a+b",
            "auth": "Bearer one",
            "accept": "x/y",
            "body": None,
        },
        {
            "method": "POST",
            "path": "/prefix/api/v1/namespaces/n/events",
            "auth": "Bearer two",
            "accept": "application/json",
            "body": {"reason": "R"},
        },
    ]


def test_an_error_status_is_an_api_error_with_the_servers_body(server: str) -> None:
    api = ApiClient(Credentials(kopf.ConnectionInfo(server=server, username="u", password="p")))
    with pytest.raises(ApiError) as exc:
        api.request("GET", "/refused")
    assert (exc.value.status, exc.value.body) == (403, '{"kind":"Status","reason":"Forbidden"}')
    assert Recorder.seen[0]["auth"] == "Basic " + base64.b64encode(b"u:p").decode()


def test_one_connection_serves_a_listings_pages(server: str) -> None:
    api = ApiClient(Credentials(kopf.ConnectionInfo(server=server)))
    conn = api.connect()
    try:
        for page in ("1", "2"):
            api.request("GET", "/api/v1/pods", query=[("continue", page)], conn=conn)
    finally:
        conn.close()
    assert [s["path"] for s in Recorder.seen] == [
        "/prefix/api/v1/pods?continue=1",
        "/prefix/api/v1/pods?continue=2",
    ]
    assert len(set(Recorder.ports)) == 1, "each page had a connection of its own"
