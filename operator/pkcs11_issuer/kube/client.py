"""A thin asyncio client for the few Kubernetes API calls the operator makes itself.

kopf watches the resources; reading and writing Secrets, status subresources and Events goes
through here, one HTTP request per call, with the credentials kopf's login functions found.
Those expire (a Pod's projected ServiceAccount token is rotated by the kubelet), so a client
given a `relogin` function logs in again when the API server answers 401.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import contextlib
import json
import logging
import os
import secrets
import socket
import ssl
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import aiohttp
import kopf

logger = logging.getLogger("pkcs11_issuer.kube")

REPORTING_COMPONENT = "pkcs11-issuer"
# The API server measures Event messages in bytes (Go's len) and refuses longer ones.
EVENT_MESSAGE_LIMIT = 1024
# kubectl's chunk size: big enough that a page is one request almost always.
DEFAULT_PAGE_SIZE = 500

_PATCH_CONTENT_TYPES = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
}


class ApiError(Exception):
    """The API server refused a request (`status` >= 300), or could not be reached (0)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{reason} ({status}): {message}")
        self.status = status
        self.reason = reason
        self.message = message


class NotFound(ApiError):
    """404: the object, its namespace or its resource type does not exist."""


class Conflict(ApiError):
    """409: the name is taken (AlreadyExists) or the resourceVersion is stale (Conflict)."""


def core_path(
    resource: str,
    namespace: str | None = None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    """`/api/v1/[namespaces/<namespace>/]<resource>[/<name>[/<subresource>]]`."""
    return _path("/api/v1", resource, namespace, name, subresource)


# Positional like core_path, whose arguments it extends: the order is the URL's order.
def group_path(  # noqa: PLR0917
    group: str,
    version: str,
    resource: str,
    namespace: str | None = None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    """`/apis/<group>/<version>/[namespaces/<namespace>/]<resource>[/<name>[/<subresource>]]`."""
    return _path(
        f"/apis/{_segment(group)}/{_segment(version)}", resource, namespace, name, subresource
    )


def _path(
    prefix: str,
    resource: str,
    namespace: str | None,
    name: str | None,
    subresource: str | None,
) -> str:
    if subresource is not None and name is None:
        raise ValueError(f"subresource {subresource!r} needs an object name")
    parts = [prefix]
    if namespace is not None:
        parts += ["namespaces", _segment(namespace)]
    parts.append(_segment(resource))
    parts += [_segment(part) for part in (name, subresource) if part is not None]
    return "/".join(parts)


def _segment(text: str) -> str:
    # The API server's own rule for names in paths. Names often come from resource fields
    # (a Certificate's secretName), so "../x" must not walk to another URL.
    if text in {"", ".", ".."} or "/" in text or "%" in text:
        raise ValueError(f"{text!r} cannot be a segment of a Kubernetes API path")
    return text


@dataclass(frozen=True)
class _Credentials:
    """What one `kopf.ConnectionInfo` says about where and how to send a request."""

    server: str
    headers: Mapping[str, str]  # the Authorization header, if any: never log it
    ssl: ssl.SSLContext
    proxy: str | None

    @classmethod
    def from_connection(cls, info: kopf.ConnectionInfo) -> _Credentials:
        return cls(
            server=info.server.rstrip("/"),
            headers=info.as_http_headers(),
            ssl=_ssl_context(info),
            proxy=info.proxy_url,
        )

    def __repr__(self) -> str:
        # The dataclass repr would show the token.
        return f"_Credentials(server={self.server!r}, headers=<{len(self.headers)} hidden>)"


class KubeClient:
    """One aiohttp session to one API server. Build it with `from_connection` in the loop."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        credentials: _Credentials,
        *,
        relogin: Callable[[], kopf.ConnectionInfo] | None = None,
    ) -> None:
        self._session = session
        self._credentials = credentials
        self._relogin = relogin
        # Bumped by every refresh: a request that got 401 with the credentials of generation
        # N logs in again only if nobody has since, so a burst of 401s costs one relogin.
        self._generation = 0
        self._refresh_lock = asyncio.Lock()
        self._hostname = socket.gethostname()

    @classmethod
    def from_connection(
        cls,
        info: kopf.ConnectionInfo,
        *,
        timeout: float = 30.0,
        max_connections: int = 20,
        relogin: Callable[[], kopf.ConnectionInfo] | None = None,
    ) -> KubeClient:
        """A client using `info`'s server, CA, client certificate or token, and proxy.

        Call it from a running event loop (aiohttp binds the session to it). Client
        certificates given as data touch the disk only while `ssl` loads them.

        With `relogin` (say, `lambda: kopf.login_with_service_account(...)`), a request
        answered 401 calls it once, in a worker thread, for fresh credentials and is sent
        again with them; requests that got 401 at the same time share that one call. A
        second 401 is an ApiError like any other.
        """
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max_connections),
            headers={"User-Agent": REPORTING_COMPONENT},
            timeout=aiohttp.ClientTimeout(total=timeout),
            trust_env=info.trust_env,
        )
        return cls(session, _Credentials.from_connection(info), relogin=relogin)

    async def close(self) -> None:
        await self._session.close()

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def get(self, path: str) -> dict[str, Any] | None:
        """The object at `path`, or None if there is none."""
        try:
            return await self._request("GET", path)
        except NotFound:
            return None

    async def list(
        self,
        path: str,
        *,
        label_selector: str | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> builtins.list[dict[str, Any]]:
        """Every item of the collection at `path`, however many pages that takes.

        Items get the apiVersion and kind that the API server leaves out of list items, so
        each is a complete body (for `post_event`, say).
        """
        params = {"limit": str(page_size)}
        if label_selector is not None:
            params["labelSelector"] = label_selector
        items: builtins.list[dict[str, Any]] = []
        while True:
            page = await self._request("GET", path, params=params)
            kind = str(page.get("kind", "")).removesuffix("List")
            for item in page.get("items") or []:
                items.append({"apiVersion": page.get("apiVersion"), "kind": kind, **item})
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items
            params["continue"] = token

    async def create(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST `body` to the collection `path`; Conflict if the name is taken."""
        return await self._request("POST", path, body=body)

    async def replace(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """PUT `body`; Conflict if its metadata.resourceVersion is no longer current."""
        return await self._request("PUT", path, body=body)

    async def patch(
        self,
        path: str,
        body: Mapping[str, Any] | builtins.list[Any],
        *,
        kind: Literal["merge", "json", "strategic"] = "merge",
    ) -> dict[str, Any]:
        """PATCH with an RFC 7386 merge patch, an RFC 6902 JSON patch or a strategic one."""
        return await self._request(
            "PATCH", path, body=body, content_type=_PATCH_CONTENT_TYPES[kind]
        )

    async def delete(
        self,
        path: str,
        *,
        propagation: Literal["Background", "Foreground", "Orphan"] | None = None,
    ) -> None:
        """Delete the object at `path`; one that is already gone is fine."""
        params = {} if propagation is None else {"propagationPolicy": propagation}
        with contextlib.suppress(NotFound):
            await self._request("DELETE", path, params=params)

    async def post_event(
        self,
        involved: Mapping[str, Any],
        *,
        type: Literal["Normal", "Warning"],
        reason: str,
        message: str,
        component: str = REPORTING_COMPONENT,
    ) -> None:
        """Record a core/v1 Event about the object `involved`, or log why that failed.

        Never raises ApiError: an Event is worth a log line, never a failed reconcile.
        """
        metadata = involved.get("metadata") or {}
        name = metadata.get("name")
        object_namespace = metadata.get("namespace")
        # kubectl describe looks for a cluster-scoped object's events in every namespace, by
        # an involvedObject without namespace; `default` is where the kubelet puts its own.
        namespace = object_namespace or "default"
        reference = {
            "apiVersion": involved.get("apiVersion"),
            "kind": involved.get("kind"),
            "name": name,
            "namespace": object_namespace,
            "uid": metadata.get("uid"),
            "resourceVersion": metadata.get("resourceVersion"),
        }
        now = datetime.now(UTC)
        timestamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{name}.{secrets.token_hex(8)}", "namespace": namespace},
            "involvedObject": {key: value for key, value in reference.items() if value},
            "type": type,
            "reason": reason,
            # With eventTime set the API server requires an action; the reason names it best.
            "action": reason,
            "message": _truncate(message, EVENT_MESSAGE_LIMIT),
            "count": 1,
            "firstTimestamp": timestamp,
            "lastTimestamp": timestamp,
            "eventTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "source": {"component": component},
            "reportingComponent": REPORTING_COMPONENT,
            "reportingInstance": self._hostname,
        }
        try:
            await self._request("POST", core_path("events", namespace=namespace), body=event)
        except ApiError as error:
            logger.warning(
                "could not post %s event %s about %s %s/%s: %s",
                type,
                reason,
                involved.get("kind"),
                object_namespace or "",
                name,
                error,
            )

    async def _request(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | builtins.list[Any] | None = None,
        content_type: str = "application/json",
        params: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        # Read together, before the first await: the generation these credentials belong to.
        credentials, generation = self._credentials, self._generation
        status, http_reason, payload = await self._send(
            credentials, method, path, data=data, headers=headers, params=params
        )
        if status == 401 and self._relogin is not None:
            failure = await self._refresh(self._relogin, generation)
            if failure is not None:
                raise _api_error(status, http_reason, payload) from failure
            status, http_reason, payload = await self._send(
                self._credentials, method, path, data=data, headers=headers, params=params
            )
        if status >= 300:
            raise _api_error(status, http_reason, payload)
        decoded: dict[str, Any] = json.loads(payload) if payload else {}
        return decoded

    async def _send(
        self,
        credentials: _Credentials,
        method: str,
        path: str,
        *,
        data: bytes | None,
        headers: Mapping[str, str],
        params: Mapping[str, str] | None,
    ) -> tuple[int, str, bytes]:
        try:
            async with self._session.request(
                method,
                credentials.server + path,
                data=data,
                headers={**credentials.headers, **headers},
                params=params,
                ssl=credentials.ssl,
                proxy=credentials.proxy,
            ) as response:
                status, http_reason = response.status, response.reason or ""
                payload = await response.read()
        except (aiohttp.ClientError, TimeoutError) as error:
            detail = str(error) or type(error).__name__
            raise ApiError(
                0, "Unreachable", f"{method} {credentials.server}{path}: {detail}"
            ) from error
        logger.debug("%s %s: %d", method, path, status)
        return status, http_reason, payload

    async def _refresh(
        self, relogin: Callable[[], kopf.ConnectionInfo], generation: int
    ) -> Exception | None:
        """New credentials from `relogin`, unless someone got them since `generation`.

        Returns why logging in again failed, if it did. Either way the generation moves on,
        so the requests waiting here try once more, and the next 401 tries `relogin` again.
        """
        async with self._refresh_lock:
            if self._generation != generation:
                return None
            try:
                # kopf's login functions read files; the SSL context may write and load some.
                fresh = await asyncio.to_thread(lambda: _Credentials.from_connection(relogin()))
            except Exception as error:
                # Only the type: a kubeconfig parser's message may quote the token's line.
                logger.warning("HTTP 401, and logging in again failed: %s", type(error).__name__)
                self._generation += 1
                return error
            self._credentials = fresh
            self._generation += 1
            logger.info("HTTP 401: logged in again (credentials generation %d)", self._generation)
            return None


def _api_error(status: int, http_reason: str, payload: bytes) -> ApiError:
    reason, message = http_reason, f"HTTP {status} without a Kubernetes Status"
    # Anything else than a Status (a proxy's HTML page, say) keeps the HTTP reason.
    with contextlib.suppress(ValueError):
        document = json.loads(payload)
        if isinstance(document, dict) and document.get("kind") == "Status":
            reason = document.get("reason") or reason
            message = document.get("message") or message
    error_class = {404: NotFound, 409: Conflict}.get(status, ApiError)
    return error_class(status, reason, message)


def _truncate(text: str, limit: int) -> str:
    encoded = text.encode()
    if len(encoded) <= limit:
        return text
    return encoded[: limit - 3].decode(errors="ignore") + "..."


def _ssl_context(info: kopf.ConnectionInfo) -> ssl.SSLContext:
    context = ssl.create_default_context(
        cafile=info.ca_path or None,
        cadata=_pem(info.ca_data) if info.ca_data else None,
    )
    if info.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if not any(
        (info.certificate_path, info.certificate_data, info.private_key_path, info.private_key_data)
    ):
        return context
    # ssl loads certificates and keys only from files. Once loaded they live in the context,
    # so the files go at once rather than sitting on disk for the life of the client.
    with tempfile.TemporaryDirectory(prefix="pkcs11-issuer-kube-") as directory:
        certfile = info.certificate_path
        if info.certificate_data:
            certfile = _write_private(Path(directory) / "tls.crt", _pem(info.certificate_data))
        keyfile = info.private_key_path
        if info.private_key_data:
            keyfile = _write_private(Path(directory) / "tls.key", _pem(info.private_key_data))
        if not certfile or not keyfile:
            raise ValueError("a client certificate needs both the certificate and its key")
        context.load_cert_chain(certfile, keyfile)
    return context


def _write_private(path: Path, text: str) -> Path:
    # Readable by its owner only from the moment it exists, like its mkdtemp (0700) directory.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return path


def _pem(data: str | bytes) -> str:
    # kubeconfig's *-data fields hold base64 of the PEM; a hand-built ConnectionInfo may hold
    # the PEM itself. kopf accepts both, so do we.
    text = data.decode("ascii") if isinstance(data, bytes) else data
    if text.lstrip().startswith("-----BEGIN "):
        return text
    return base64.b64decode(text).decode("ascii")
