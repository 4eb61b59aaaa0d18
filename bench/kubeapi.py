"""The benchmark's own Kubernetes API client: plain aiohttp, as cluster admin.

Deliberately not `pkcs11_issuer.kube.KubeClient`: the benchmark measures the operator's client
among other things, and the ceiling it compares with must not share its costs. Also here: the
API server's own request counters (`apiserver_request_total`), which count every write the
operator sends, by verb and resource.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import ssl
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import yaml

GROUP_PATH = "/apis/pkcs11-issuer.io/v1alpha1"
# Verbs of apiserver_request_total that change something.
WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION"})
# What the operator writes. The control plane writes only Leases and the like by itself.
OPERATOR_RESOURCES = frozenset({"certificates", "issuers", "clusterissuers", "secrets", "events"})

_REQUESTS = "apiserver_request_total{"
_LABEL = re.compile(r'(\w+)="([^"]*)"')

# (verb, resource or resource/subresource) -> count
RequestCounts = Counter[tuple[str, str]]
Events = AsyncIterator[tuple[float, str, dict[str, Any]]]


def certificates_path(namespace: str, name: str | None = None, sub: str | None = None) -> str:
    path = f"{GROUP_PATH}/namespaces/{namespace}/certificates"
    return path + (f"/{name}" if name else "") + (f"/{sub}" if sub else "")


def issuers_path(namespace: str, name: str | None = None) -> str:
    return f"{GROUP_PATH}/namespaces/{namespace}/issuers" + (f"/{name}" if name else "")


def core_path(resource: str, namespace: str, name: str | None = None) -> str:
    return f"/api/v1/namespaces/{namespace}/{resource}" + (f"/{name}" if name else "")


def ready_status(body: Mapping[str, Any]) -> str | None:
    for condition in (body.get("status") or {}).get("conditions") or ():
        if condition.get("type") == "Ready":
            return str(condition.get("status"))
    return None


class ApiError(RuntimeError):
    def __init__(self, method: str, path: str, status: int, text: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {text[:300]}")
        self.status = status


def _ssl_from_kubeconfig(kubeconfig: Path, scratch: Path) -> tuple[str, ssl.SSLContext]:
    """Server URL and TLS context of the admin kubeconfig the control plane writes (client
    certificate given as data; written next to it, owner-only, for `ssl` to load)."""
    config = yaml.safe_load(kubeconfig.read_text())
    cluster = config["clusters"][0]["cluster"]
    user = config["users"][0]["user"]
    context = ssl.create_default_context(
        cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
    )
    scratch.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert, key = scratch / "bench-admin.crt", scratch / "bench-admin.key"
    for path, field in ((cert, "client-certificate-data"), (key, "client-key-data")):
        path.touch(mode=0o600)
        path.write_bytes(base64.b64decode(user[field]))
    context.load_cert_chain(str(cert), str(key))
    return cluster["server"].rstrip("/"), context


class Api:
    """One aiohttp session to the API server. Use inside the event loop that runs the figure."""

    def __init__(self, kubeconfig: Path, scratch: Path, *, connections: int = 64) -> None:
        self.server, self._ssl = _ssl_from_kubeconfig(kubeconfig, scratch)
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Api:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._connections, ssl=self._ssl),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        )
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use `async with Api(...)`"
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        ok: tuple[int, ...] = (200, 201),
        params: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        async with self.session.request(
            method, self.server + path, data=data, headers=headers, params=params
        ) as response:
            text = await response.text()
            if response.status not in ok:
                raise ApiError(method, path, response.status, text)
            return json.loads(text) if text else {}

    async def get(self, path: str) -> dict[str, Any] | None:
        try:
            return await self.request("GET", path)
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    async def create(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self.request("POST", path, body)

    async def merge_patch(self, path: str, body: Any) -> dict[str, Any]:
        return await self.request("PATCH", path, body, content_type="application/merge-patch+json")

    async def list_items(self, path: str) -> tuple[list[dict[str, Any]], str]:
        """All items and the list's resourceVersion (to start a watch from)."""
        items: list[dict[str, Any]] = []
        params = {"limit": "500"}
        while True:
            page = await self.request("GET", path, params=params)
            items += page.get("items") or []
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items, str(page["metadata"]["resourceVersion"])
            params["continue"] = token

    @contextlib.asynccontextmanager
    async def watch(self, path: str, resource_version: str) -> AsyncIterator[Events]:
        """A watch of the collection `path` from `resource_version`, established (the API
        server has answered) when the block is entered. It yields (local arrival time, event
        type, object) until the block is left."""
        params = {
            "watch": "1",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "false",
            "timeoutSeconds": "3600",
        }
        async with self.session.get(
            self.server + path, params=params, headers={"Accept": "application/json"}
        ) as response:
            if response.status != 200:
                raise ApiError("WATCH", path, response.status, await response.text())
            yield self._events(response)

    @staticmethod
    async def _events(response: aiohttp.ClientResponse) -> Events:
        buffer = b""
        async for chunk in response.content.iter_any():
            arrived = time.monotonic()
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if line.strip():
                    event = json.loads(line)
                    yield arrived, event["type"], event["object"]

    async def text(self, path: str) -> str:
        async with self.session.get(self.server + path) as response:
            if response.status != 200:
                raise ApiError("GET", path, response.status, await response.text())
            return await response.text()

    async def request_counts(self) -> RequestCounts:
        """The API server's `apiserver_request_total`, summed over codes and clients."""
        return parse_request_counts(await self.text("/metrics"))

    async def wait_ready(
        self, path: str, *, timeout: float, what: str
    ) -> dict[str, Any]:  # one object's Ready=True
        deadline = time.monotonic() + timeout
        while True:
            body = await self.get(path)
            if body is not None and ready_status(body) == "True":
                return body
            if time.monotonic() > deadline:
                conditions = (body or {}).get("status", {}).get("conditions")
                raise TimeoutError(f"{what} not Ready after {timeout:.0f}s: {conditions}")
            await asyncio.sleep(0.2)


def parse_request_counts(text: str) -> RequestCounts:
    # The API server's /metrics is megabytes of histograms; only these lines matter, and a
    # full Prometheus parse of the rest would cost the CPUs the figures are measuring.
    counts: RequestCounts = Counter()
    for line in text.splitlines():
        if not line.startswith(_REQUESTS):
            continue
        labels_text, _, value = line[len(_REQUESTS) :].rpartition("} ")
        labels = dict(_LABEL.findall(labels_text))
        resource = labels.get("resource", "")
        if labels.get("subresource"):
            resource += "/" + labels["subresource"]
        counts[(labels.get("verb", ""), resource)] += int(float(value))
    return counts


def operator_writes(before: RequestCounts, after: RequestCounts) -> RequestCounts:
    """Writes to the resources the operator touches, between two snapshots."""
    delta: RequestCounts = Counter()
    for (verb, resource), count in after.items():
        if verb in WRITE_VERBS and resource.split("/")[0] in OPERATOR_RESOURCES:
            changed = count - before.get((verb, resource), 0)
            if changed:
                delta[(verb, resource)] = changed
    return delta


def reads(before: RequestCounts, after: RequestCounts) -> RequestCounts:
    """GETs and LISTs of the operator's resources between two snapshots (WATCH excluded)."""
    delta: RequestCounts = Counter()
    for (verb, resource), count in after.items():
        if verb in ("GET", "LIST") and resource.split("/")[0] in OPERATOR_RESOURCES:
            changed = count - before.get((verb, resource), 0)
            if changed:
                delta[(verb, resource)] = changed
    return delta


def describe(counts: Mapping[tuple[str, str], float], per: float = 1.0) -> str:
    """ "PATCH certificates/status 1.00, CREATE secrets 1.00" (divided by `per`)."""
    return ", ".join(
        f"{verb} {resource} {count / per:.2f}" for (verb, resource), count in sorted(counts.items())
    )
