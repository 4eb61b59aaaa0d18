"""The controller's engine: the latest body of every watched resource, one work queue, and
the workers that reconcile what is queued.

kopf delivers watch events (`*_event` methods); they only record the body and queue a key,
so a burst of events for one object costs one reconcile, and a restart that finds everything
correct writes nothing."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pkcs11_issuer.config import OperatorConfig
from pkcs11_issuer.controller import conditions, issuers
from pkcs11_issuer.controller.certificates import CertificateReconciler
from pkcs11_issuer.controller.conditions import Condition
from pkcs11_issuer.controller.issuers import IssuerKey, IssuerState
from pkcs11_issuer.controller.metrics import Metrics
from pkcs11_issuer.controller.secrets import CERTIFICATE_LABEL, GROUP, VERSION
from pkcs11_issuer.controller.services import Services
from pkcs11_issuer.controller.tokens import TokenRegistry
from pkcs11_issuer.controller.workqueue import WorkQueue
from pkcs11_issuer.kube import KubeClient, group_path

log = logging.getLogger(__name__)

ISSUER_RECHECK_SECONDS = 300.0
ISSUER_RETRY_SECONDS = 30.0

# ("Certificate", namespace, name), ("Issuer", namespace, name), ("ClusterIssuer", None, name)
Key = tuple[str, str | None, str]

_PLURALS = {"Issuer": "issuers", "ClusterIssuer": "clusterissuers"}


def _newer(candidate: Mapping[str, Any], known: Mapping[str, Any] | None) -> bool:
    """Whether `candidate` is at least as new as `known`. resourceVersions are etcd revisions
    in every real API server; when one is not a number, the candidate wins."""
    if known is None:
        return True
    try:
        return int(candidate["metadata"]["resourceVersion"]) >= int(
            known["metadata"]["resourceVersion"]
        )
    except (KeyError, ValueError):
        return True


class Controller:
    def __init__(self, config: OperatorConfig, kube: KubeClient, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        executor = ThreadPoolExecutor(config.concurrency, thread_name_prefix="hsm")
        tokens = TokenRegistry(
            config,
            read_secret=self._read_secret,
            executor=executor,
            observer=metrics,
            on_recovered=self._token_recovered,
        )
        self.services = Services(config, kube, tokens, metrics, executor)
        metrics.watch_tokens(tokens.sessions)
        self.queue: WorkQueue[Key] = WorkQueue()
        self._bodies: dict[Key, dict[str, Any]] = {}
        # resourceVersions our own writes produced, until their watch events arrive.
        self._own_versions: dict[Key, str | None] = {}
        self._issuer_states: dict[IssuerKey, IssuerState] = {}
        self._issuer_locks: dict[IssuerKey, asyncio.Lock] = {}
        self._certificates = CertificateReconciler(self.services, self.issuer_state, self._remember)
        self._workers: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    async def _read_secret(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return await self.services.read_secret(namespace, name)

    # -- events from kopf -------------------------------------------------------------------

    def resource_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        metadata = body["metadata"]
        key: Key = (body["kind"], metadata.get("namespace"), metadata["name"])
        if event_type == "DELETED":
            self._bodies.pop(key, None)
            if key[0] == "Certificate":
                self.metrics.forget_certificate(str(key[1]), key[2])
            else:
                self._issuer_states.pop(key, None)
            return
        if _newer(body, self._bodies.get(key)):
            self._bodies[key] = dict(body)
        if self._own_versions.pop(key, None) == body["metadata"].get("resourceVersion"):
            # The echo of our own write: the pass that wrote it has already decided what
            # comes next, and a pass now would find nothing to do.
            return
        self.queue.add(key)

    def _remember(self, body: Mapping[str, Any]) -> None:
        metadata = body["metadata"]
        key: Key = (body["kind"], metadata.get("namespace"), metadata["name"])
        if key in self._bodies and _newer(body, self._bodies[key]):
            self._bodies[key] = dict(body)
            self._own_versions[key] = metadata.get("resourceVersion")

    def secret_event(self, body: Mapping[str, Any]) -> None:
        metadata = body["metadata"]
        namespace, name = metadata["namespace"], metadata["name"]
        if self._certificates.own_secret_write(namespace, name, metadata.get("resourceVersion")):
            return  # the echo of a Secret the reconciler has just written
        owner = (metadata.get("labels") or {}).get(CERTIFICATE_LABEL)
        if owner and ("Certificate", namespace, owner) in self._bodies:
            self.queue.add(("Certificate", namespace, owner))
        for key, issuer in self._issuer_bodies():
            secret_namespace = key[1] or self.config.cluster_resource_namespace
            ca = (issuer.get("spec") or {}).get("ca") or {}
            if secret_namespace == namespace and ca.get("secretName") == name:
                self.queue.add(key)

    def _issuer_bodies(self) -> list[tuple[Key, dict[str, Any]]]:
        return [(k, b) for k, b in self._bodies.items() if k[0] in _PLURALS]

    def _token_recovered(self, token: str) -> None:
        """Called from HSM worker threads: hop onto the loop before touching the queue."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._requeue_after_recovery, token)

    def _requeue_after_recovery(self, token: str) -> None:
        log.info("token %s answers again; re-checking what waited on it", token)
        for key, state in self._issuer_states.items():
            if not state.ready or state.token == token:
                self.queue.add(key)
        for key, body in self._bodies.items():
            ready = conditions.find(body.get("status"), "Ready")
            if key[0] == "Certificate" and ready is not None and ready.get("status") != "True":
                self.queue.add(key)

    # -- issuers ----------------------------------------------------------------------------

    async def issuer_state(self, key: IssuerKey) -> IssuerState | None:
        """The issuer's current state, evaluated now if nobody has yet (at start-up a
        Certificate may be seen before its issuer; it waits instead of failing)."""
        state = self._issuer_states.get(key)
        if state is not None:
            return state
        async with self._issuer_locks.setdefault(key, asyncio.Lock()):
            state = self._issuer_states.get(key)
            if state is not None:
                return state
            body = self._bodies.get(key)
            if body is None:
                kind, namespace, name = key
                body = await self.services.kube.get(
                    group_path(GROUP, VERSION, _PLURALS[kind], namespace, name)
                )
                if body is None:
                    return None
                self._bodies[key] = body
            return await self._evaluate_issuer(key, body)

    async def _evaluate_issuer(self, key: IssuerKey, body: Mapping[str, Any]) -> IssuerState:
        state = await issuers.evaluate(self.services, body)
        previous = self._issuer_states.get(key)
        self._issuer_states[key] = state
        await self._write_issuer_status(body, state)
        changed = previous is None or (
            previous.ready != state.ready
            or previous.chain[:1] != state.chain[:1]
            or previous.uid != state.uid
        )
        if changed:
            # A first sighting only wakes Certificates that wait for this issuer; at start-up
            # the Ready ones are reconciled anyway, by their own watch events.
            self._requeue_certificates_of(key, only_waiting=previous is None)
        return state

    def _requeue_certificates_of(self, key: IssuerKey, *, only_waiting: bool) -> None:
        kind, namespace, name = key
        for cert_key, body in self._bodies.items():
            if cert_key[0] != "Certificate":
                continue
            ready = conditions.find(body.get("status"), "Ready") or {}
            if only_waiting and ready.get("status") == "True":
                continue
            ref = (body.get("spec") or {}).get("issuerRef") or {}
            if (
                ref.get("name") == name
                and (ref.get("kind") or "Issuer") == kind
                and (kind == "ClusterIssuer" or cert_key[1] == namespace)
            ):
                self.queue.add(cert_key)

    async def _write_issuer_status(self, body: Mapping[str, Any], state: IssuerState) -> None:
        metadata = body["metadata"]
        problem = state.problem
        condition = (
            Condition(
                "Ready", "True", "KeyPairVerified" if state.signer else "IsReady", state.message
            )
            if problem is None
            else Condition("Ready", "False", problem.reason, problem.message)
        )
        status = body.get("status") or {}
        previous = conditions.find(status, "Ready")
        wanted = {
            "conditions": conditions.render(
                [condition],
                status,
                generation=metadata.get("generation"),
                now=conditions.now(),
            )
        }
        patch = conditions.status_patch(status, wanted)
        if patch is None:
            return
        kind, namespace, name = body["kind"], metadata.get("namespace"), metadata["name"]
        path = group_path(GROUP, VERSION, _PLURALS[kind], namespace, name, "status")
        self._remember(await self.services.kube.patch(path, {"status": patch}))
        if previous is None or (previous.get("reason"), previous.get("message")) != (
            condition.reason,
            condition.message,
        ):
            await self.services.kube.post_event(
                body,
                type="Normal" if problem is None else "Warning",
                reason=condition.reason,
                message=condition.message,
            )

    # -- the workers ------------------------------------------------------------------------

    async def _process(self, key: Key) -> None:
        body = self._bodies.get(key)
        if body is None:
            return
        try:
            if key[0] == "Certificate":
                delay = await self._certificates.reconcile(body)
            else:
                async with self._issuer_locks.setdefault(key, asyncio.Lock()):
                    state = await self._evaluate_issuer(key, body)
                delay = ISSUER_RECHECK_SECONDS if state.ready else ISSUER_RETRY_SECONDS
        except Exception:
            log.exception("reconciling %s %s/%s failed", *key)
            delay = ISSUER_RETRY_SECONDS
        if delay is not None:
            self.queue.add(key, delay)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._workers = [
            asyncio.create_task(self.queue.worker(self._process), name=f"reconcile-{i}")
            for i in range(self.config.concurrency)
        ]

    async def stop(self) -> None:
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        self.services.executor.shutdown(wait=True, cancel_futures=True)
        self.services.tokens.close()

    @property
    def started(self) -> bool:
        return bool(self._workers)
