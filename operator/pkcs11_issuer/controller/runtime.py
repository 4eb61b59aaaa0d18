"""Running the operator: credentials, the controller, the health and metrics server, and
kopf's watch machinery, started and stopped together."""

from __future__ import annotations

import asyncio
import logging
import threading

import kopf

from pkcs11_issuer.config import OperatorConfig
from pkcs11_issuer.controller.controller import Controller
from pkcs11_issuer.controller.handlers import build_registry
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


def operator_settings() -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    # The controller writes its own Events; kopf's would repeat its log lines into the API.
    settings.posting.enabled = False
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    return settings


async def operate(
    config: OperatorConfig, *, stop_flag: asyncio.Event | threading.Event | None = None
) -> None:
    settings = operator_settings()

    def relogin() -> kopf.ConnectionInfo:
        # Read afresh on every call: the kubelet rotates a Pod's projected token file.
        return login(settings)

    # Our client and kopf's both log in again on 401, each through `relogin`.
    kube = KubeClient.from_connection(relogin(), relogin=relogin)
    metrics = Metrics()
    controller = Controller(config, kube, metrics)
    ready = asyncio.Event()
    health = HealthServer(
        metrics,
        metrics_port=config.metrics_port or None,
        health_port=config.health_port or None,
        ready=lambda: ready.is_set() and controller.started,
        alive=lambda: True,
    )
    await health.start()
    log.info("pkcs11-issuer starting: %d token(s) configured", len(config.tokens))
    try:
        await kopf.operator(
            registry=build_registry(controller, relogin),
            settings=settings,
            clusterwide=True,
            standalone=True,
            stop_flag=stop_flag,
            ready_flag=ready,
        )
    finally:
        await health.stop()
        await kube.close()
