"""The agent's credentials and its own small REST client (blocking; the agent calls it in threads).

The agent does not use the ``kubernetes`` client package: importing it costs ~34 MiB resident,
a sixth of the agent's memory target, for the few calls the agent makes besides kopf's watches
(paged listings, Events, a ConfigMap, its Node, ``/version``). Those go through
:class:`ApiClient` on the standard library's ``http.client``, with the TLS context and
``Authorization`` header kopf's own :class:`kopf.ConnectionInfo` builds, so the watches and
these calls log in the same way.

Credentials (:func:`load_credentials`): ``--kubeconfig`` when given; else the pod's
ServiceAccount (in-cluster: the token and CA kubelet mounts, the address kubelet puts in the
environment); else the default kubeconfig (the first file of ``$KUBECONFIG``, else
``~/.kube/config``). A kubeconfig may give the CA, client certificate and key as files (relative
to the kubeconfig's directory) or inline data, a token, a token file, or a user name and
password; ``exec`` and ``auth-provider`` plugins are not supported (the agent runs in-cluster; a
kubeconfig is for labs and development). The ServiceAccount token is re-read at every login and
request: kubelet rotates it in place.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import ssl
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kopf
import yaml

from controller.errors import ApiError, UsageError

# Where kubelet mounts a pod's ServiceAccount (the token, the cluster's CA).
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclass(frozen=True)
class Credentials:
    """How to reach and log in to the API server; ``token_file`` is read again at every login."""

    info: kopf.ConnectionInfo
    token_file: Path | None = None

    def current(self) -> kopf.ConnectionInfo:
        if self.token_file is None:
            return self.info
        return dataclasses.replace(self.info, token=self.token_file.read_text().strip() or None)


def load_credentials(kubeconfig: str | None) -> Credentials:
    """``kubeconfig``, else in-cluster, else the default kubeconfig; UsageError if none works."""
    if kubeconfig:
        return from_kubeconfig(Path(kubeconfig))
    found = in_cluster()
    if found is not None:
        return found
    default = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or "~/.kube/config"
    path = Path(default).expanduser()
    if not path.is_file():
        raise UsageError(
            "no credentials for the API server: not in a pod with a ServiceAccount"
            f" ({SERVICE_ACCOUNT}/token, $KUBERNETES_SERVICE_HOST) and no kubeconfig at {path}"
        )
    return from_kubeconfig(path)


def in_cluster() -> Credentials | None:
    """The pod's ServiceAccount, as kubelet mounts it; None outside a pod."""
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
    token = SERVICE_ACCOUNT / "token"
    if not host or not port or not token.is_file():
        return None
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    ca = SERVICE_ACCOUNT / "ca.crt"
    info = kopf.ConnectionInfo(server=f"https://{host}:{port}", ca_path=str(ca) if ca.is_file() else None)
    creds = Credentials(info, token_file=token)
    return Credentials(creds.current(), token_file=token)


def from_kubeconfig(path: Path) -> Credentials:
    """The current context of the kubeconfig at ``path``."""
    try:
        doc = yaml.safe_load(path.read_text()) or {}
        context = _named(doc, "contexts", doc["current-context"])["context"]
        cluster = _named(doc, "clusters", context["cluster"])["cluster"]
        user = _named(doc, "users", context["user"]).get("user") or {}
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise UsageError(
            f"no credentials for the API server: cannot read kubeconfig {path}: {exc!r}"
        ) from exc
    unsupported = sorted({"exec", "auth-provider"} & user.keys())
    if unsupported:
        raise UsageError(
            f"kubeconfig {path}: the agent does not run credential plugins ({', '.join(unsupported)});"
            " give it a token, a token file or a client certificate"
        )

    def file(value: str | None) -> str | None:  # relative to the kubeconfig, as kubectl reads it
        return str(path.parent / Path(value).expanduser()) if value else None

    info = kopf.ConnectionInfo(
        server=cluster["server"],
        ca_path=file(cluster.get("certificate-authority")),
        ca_data=cluster.get("certificate-authority-data"),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        certificate_path=file(user.get("client-certificate")),
        certificate_data=user.get("client-certificate-data"),
        private_key_path=file(user.get("client-key")),
        private_key_data=user.get("client-key-data"),
        username=user.get("username"),
        password=user.get("password"),
        token=user.get("token"),
    )
    token_file = file(user.get("tokenFile"))
    creds = Credentials(info, token_file=Path(token_file) if token_file else None)
    return Credentials(creds.current(), token_file=creds.token_file)


def _named(doc: dict[str, Any], section: str, name: str) -> dict[str, Any]:
    for item in doc.get(section) or []:
        if item.get("name") == name:
            return dict(item)
    raise KeyError(f"{section} has no entry named {name!r}")


class ApiClient:
    """Blocking JSON requests to the API server (a connection per request: the agent's own calls
    are few, a listing's pages share one)."""

    def __init__(self, credentials: Credentials, *, timeout: float = 60.0) -> None:
        self.credentials = credentials
        self.timeout = timeout
        url = urllib.parse.urlsplit(credentials.info.server)
        if url.scheme not in ("https", "http") or not url.hostname:
            raise UsageError(f"the API server's address is not an http(s) URL: {credentials.info.server!r}")
        self._https = url.scheme == "https"
        self._host = url.hostname
        self._port = url.port
        self._prefix = url.path.rstrip("/")
        self._tls: ssl.SSLContext | None = credentials.info.as_ssl_context() if self._https else None

    def connect(self, timeout: float | None = None) -> http.client.HTTPConnection:
        if self._tls is not None:
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=timeout or self.timeout, context=self._tls
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout or self.timeout)

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: Any = None,
        accept: str = "application/json",
        timeout: float | None = None,
        conn: http.client.HTTPConnection | None = None,
    ) -> Any:
        """The response's JSON; :class:`ApiError` for any status but 2xx. ``conn`` (from
        :meth:`connect`) is used and left open; without it the request has its own connection."""
        target = self._prefix + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        headers = {"Accept": accept, **self.credentials.current().as_http_headers()}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        own = conn is None
        c = self.connect(timeout) if conn is None else conn
        try:
            c.request(method, target, body=payload, headers=headers)
            response = c.getresponse()
            data = response.read()
        finally:
            if own:
                c.close()
        if not 200 <= response.status < 300:
            raise ApiError(
                method,
                path,
                status=response.status,
                reason=response.reason,
                body=data.decode(errors="replace"),
            )
        return json.loads(data) if data else None
