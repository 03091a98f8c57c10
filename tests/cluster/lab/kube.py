"""A small typed Kubernetes REST client over urllib: the few verbs the lab and its tests need.

JSON in, JSON out; no client library between the tests and the API.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Obj = dict[str, Any]

STRATEGIC = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"


class ApiError(RuntimeError):
    def __init__(self, status: int, method: str, path: str, body: str) -> None:
        try:
            message = str(json.loads(body).get("message", body))
        except (json.JSONDecodeError, AttributeError):
            message = body
        super().__init__(f"{method} {path}: {status} {message}")
        self.status = status


@dataclass(frozen=True)
class Credentials:
    server: str
    ca: Path
    cert: Path
    key: Path


class Kube:
    def __init__(self, creds: Credentials, *, timeout: float = 30.0) -> None:
        self.creds = creds
        self.timeout = timeout
        self._ctx = ssl.create_default_context(cafile=str(creds.ca))
        self._ctx.load_cert_chain(str(creds.cert), str(creds.key))

    def _open(
        self,
        method: str,
        path: str,
        *,
        body: object = None,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        timeout: float | None = None,
    ) -> Any:
        url = self.creds.server + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Accept", "application/json")
        req.add_header("User-Agent", "stockade-lab")
        if data is not None:
            req.add_header("Content-Type", content_type)
        try:
            return urllib.request.urlopen(req, context=self._ctx, timeout=timeout or self.timeout)
        except urllib.error.HTTPError as exc:
            raise ApiError(exc.code, method, path, exc.read().decode(errors="replace")) from None

    def call(
        self,
        method: str,
        path: str,
        *,
        body: object = None,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Obj:
        with self._open(method, path, body=body, query=query, content_type=content_type) as resp:
            raw = resp.read()
        out: Obj = json.loads(raw) if raw else {}
        return out

    def get(self, path: str, **query: str) -> Obj:
        return self.call("GET", path, query=query or None)

    def text(self, path: str) -> str:
        """GET a path that does not answer JSON (e.g. a pod's /metrics through the API's proxy)."""
        with self._open("GET", path) as resp:
            return str(resp.read().decode(errors="replace"))

    def create(self, path: str, body: Obj) -> Obj:
        return self.call("POST", path, body=body)

    def patch(self, path: str, body: Obj, *, kind: str = STRATEGIC) -> Obj:
        return self.call("PATCH", path, body=body, content_type=kind)

    def delete(self, path: str, body: Obj | None = None) -> Obj:
        return self.call("DELETE", path, body=body)

    def healthy(self, endpoint: str = "/readyz") -> bool:
        try:
            with self._open("GET", endpoint, timeout=5) as resp:
                return bool(resp.status == 200)
        except (ApiError, OSError):
            return False
