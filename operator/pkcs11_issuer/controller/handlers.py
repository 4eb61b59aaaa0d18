"""The kopf side: which resources are watched, and where their events go. Nothing here
decides anything; see `controller.Controller`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import kopf

from pkcs11_issuer.controller.controller import Controller
from pkcs11_issuer.controller.secrets import CERTIFICATE_LABEL, GROUP, VERSION


def build_registry(
    controller: Controller, connection: Callable[[], kopf.ConnectionInfo]
) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        # Fresh each time kopf asks (after a 401): a Pod's token file is rotated.
        return connection()

    @kopf.on.startup(registry=registry)
    async def start(**_: Any) -> None:
        await controller.start()

    @kopf.on.cleanup(registry=registry)
    async def stop(**_: Any) -> None:
        await controller.stop()

    for plural in ("certificates", "issuers", "clusterissuers"):
        # async: kopf runs plain functions in a thread pool, and the controller's dicts and
        # work queue belong to the event loop.
        @kopf.on.event(GROUP, VERSION, plural, registry=registry)
        async def resource(event: kopf.RawEvent, **_: Any) -> None:
            controller.resource_event(event.get("type"), event["object"])

    @kopf.on.event("", "v1", "secrets", labels={CERTIFICATE_LABEL: kopf.PRESENT}, registry=registry)
    async def secret(event: kopf.RawEvent, **_: Any) -> None:
        controller.secret_event(event["object"])

    return registry
