"""What every reconcile needs, in one place: configuration, the API client, the tokens, the
metrics, and the thread pool where blocking PKCS#11 work runs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from pkcs11_issuer.config import OperatorConfig
from pkcs11_issuer.controller.metrics import Metrics
from pkcs11_issuer.controller.tokens import TokenRegistry
from pkcs11_issuer.kube import KubeClient, core_path

T = TypeVar("T")


@dataclass
class Services:
    config: OperatorConfig
    kube: KubeClient
    tokens: TokenRegistry
    metrics: Metrics
    executor: ThreadPoolExecutor

    async def blocking(self, function: Callable[[], T]) -> T:
        """Run HSM work off the event loop, at most `concurrency` at once."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, function)

    async def read_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self.kube.get(core_path("secrets", namespace, name))
