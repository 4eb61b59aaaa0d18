"""Running the operator: credentials, the controller, the health and metrics server, and
kopf's watch machinery, started and stopped together."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine
from typing import Any

import kopf

from pkcs11_issuer.config import OperatorConfig
from pkcs11_issuer.controller.controller import Controller
from pkcs11_issuer.controller.handlers import build_registry
from pkcs11_issuer.controller.leader import LeaderElector, default_identity
from pkcs11_issuer.controller.metrics import HealthServer, Metrics
from pkcs11_issuer.kube import KubeClient

log = logging.getLogger(__name__)


def login(settings: kopf.OperatorSettings) -> kopf.ConnectionInfo:
    """In-cluster ServiceAccount first, then KUBECONFIG / ~/.kube/config."""
    connection = kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(
        settings=settings
    )
    if connection is None:
        raise kopf.LoginError(
            "no Kubernetes credentials: run in a Pod with a ServiceAccount, or set KUBECONFIG"
        )
    return connection


class _NoDiffBase(kopf.DiffBaseStorage):
    """The controller has only on-event handlers, which need no diff; kopf would otherwise
    deep-copy and diff every watched body on every event."""

    def build(self, *, body: Any, extra_fields: Any = None) -> Any:
        return {}

    def fetch(self, *, body: Any) -> Any:
        return None

    def store(self, *, body: Any, patch: Any, essence: Any) -> None:
        return None


def operator_settings() -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.persistence.diffbase_storage = _NoDiffBase()
    # The controller writes its own Events; kopf's would repeat its log lines into the API.
    settings.posting.enabled = False
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    return settings


async def operate(
    config: OperatorConfig, *, stop_flag: asyncio.Event | threading.Event | None = None
) -> None:
    """Run until `stop_flag` is set (or SIGINT/SIGTERM); raise LeadershipLost if the Lease
    slips away, so that the process exits and its Pod restarts as a standby."""
    settings = operator_settings()

    def relogin() -> kopf.ConnectionInfo:
        # Read afresh on every call: the kubelet rotates a Pod's projected token file.
        return login(settings)

    # Our client and kopf's both log in again on 401, each through `relogin`.
    kube = KubeClient.from_connection(relogin(), relogin=relogin)
    metrics = Metrics()
    controller = Controller(config, kube, metrics)
    elector = (
        LeaderElector(kube, config.leader_election, default_identity())
        if config.leader_election
        else None
    )
    ready = asyncio.Event()

    def is_ready() -> bool:
        # A standby that reaches the API server is ready: a rolling update must be able to
        # replace the leader's Pod while the new Pod waits for the Lease.
        if elector is not None and not elector.leading:
            return elector.connected
        return ready.is_set() and controller.started

    health = HealthServer(
        metrics,
        metrics_port=config.metrics_port or None,
        health_port=config.health_port or None,
        ready=is_ready,
        alive=lambda: True,
    )
    await health.start()
    log.info("pkcs11-issuer starting: %d token(s) configured", len(config.tokens))
    try:
        running = kopf.operator(
            registry=build_registry(controller, relogin),
            settings=settings,
            clusterwide=True,
            standalone=True,
            stop_flag=stop_flag,
            ready_flag=ready,
        )
        if elector is None:
            await running
        else:
            await _lead(elector, running, stop_flag)
    finally:
        if elector is not None:
            await elector.release()
        await health.stop()
        await kube.close()


async def _lead(
    elector: LeaderElector,
    running: Coroutine[Any, Any, None],
    stop_flag: asyncio.Event | threading.Event | None,
) -> None:
    """Run `running` only while holding the Lease; waiting for it ends early on `stop_flag`."""
    acquiring = asyncio.ensure_future(elector.acquire())
    stopped = asyncio.ensure_future(_wait_for(stop_flag))
    await asyncio.wait({acquiring, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if not acquiring.done():
        acquiring.cancel()
        running.close()
        return
    stopped.cancel()
    operator_task = asyncio.ensure_future(running)
    holding = asyncio.ensure_future(elector.hold())
    try:
        await asyncio.wait({operator_task, holding}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (operator_task, holding):
            task.cancel()
        await asyncio.gather(operator_task, holding, return_exceptions=True)
    lost = holding.exception() if holding.done() and not holding.cancelled() else None
    if lost is not None:
        raise lost
    operator_task.result()


async def _wait_for(flag: asyncio.Event | threading.Event | None) -> None:
    if isinstance(flag, asyncio.Event):
        await flag.wait()
        return
    # A thread blocked in threading.Event.wait would keep asyncio.run from returning.
    while flag is None or not flag.is_set():
        await asyncio.sleep(0.5)
