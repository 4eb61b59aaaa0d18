"""Leader election over a coordination.k8s.io/v1 Lease, the way client-go does it.

With more than one replica only the holder of the Lease runs the controller; the others wait
to take over. Expiry is judged by this process's own clock from the moment it last saw the
Lease change, never by comparing the holder's renewTime with local time, so clock skew between
nodes cannot make two replicas lead at once. A leader that cannot renew within renewDeadline
gives up (the caller exits), which is before its Lease can expire for anyone else.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

from pkcs11_issuer.config import LeaderElection
from pkcs11_issuer.kube import ApiError, Conflict, KubeClient, group_path

log = logging.getLogger(__name__)


class LeadershipLost(Exception):
    """The Lease could not be renewed in time; another replica may lead from now on."""


def default_identity() -> str:
    """The Pod's name (the chart sets POD_NAME) or the host name, made unique per process so
    a restarted container never mistakes its predecessor's Lease for its own."""
    base = os.environ.get("POD_NAME") or socket.gethostname()
    return f"{base}_{uuid.uuid4().hex[:8]}"


def _micro_time(moment: float) -> str:
    return datetime.datetime.fromtimestamp(moment, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(
        self,
        kube: KubeClient,
        election: LeaderElection,
        identity: str,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._kube = kube
        self._election = election
        self.identity = identity
        self._clock = clock
        self._path = group_path(
            "coordination.k8s.io", "v1", "leases", election.namespace, election.lease_name
        )
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self.leading = False
        # Whether the last attempt reached the API server: a standby that can is healthy.
        self.connected = False

    @property
    def lease(self) -> str:
        return f"{self._election.namespace}/{self._election.lease_name}"

    async def acquire(self) -> None:
        """Return once this process holds the Lease, trying every retryPeriod."""
        waiting_logged = False
        while not await self._try_acquire_or_renew():
            if not waiting_logged and self._observed is not None:
                log.info(
                    "standing by: Lease %s is held by %s", self.lease, self._observed[0] or "-"
                )
                waiting_logged = True
            await asyncio.sleep(self._election.retry_period)
        self.leading = True
        log.info("leading: acquired Lease %s as %s", self.lease, self.identity)

    async def hold(self) -> None:
        """Renew every retryPeriod; raise LeadershipLost after renewDeadline without success."""
        last_renewed = self._clock()
        while True:
            await asyncio.sleep(self._election.retry_period)
            if await self._try_acquire_or_renew():
                last_renewed = self._clock()
            elif self._clock() - last_renewed >= self._election.renew_deadline:
                self.leading = False
                raise LeadershipLost(
                    f"could not renew Lease {self.lease} for "
                    f"{self._election.renew_deadline:g}s; stopping so that only one replica "
                    "works at a time"
                )

    async def release(self) -> None:
        """Hand the Lease over at once instead of making the next leader wait it out."""
        if not self.leading:
            return
        self.leading = False
        try:
            lease = await self._kube.get(self._path)
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            now = time.time()
            lease["spec"] = {
                **lease["spec"],
                "holderIdentity": None,
                "leaseDurationSeconds": 1,
                "renewTime": _micro_time(now),
            }
            await self._kube.replace(self._path, lease)
            log.info("released Lease %s", self.lease)
        except ApiError as error:
            log.warning("could not release Lease %s: %s", self.lease, error)

    async def _try_acquire_or_renew(self) -> bool:
        try:
            won = await self._attempt()
        except Conflict:
            # Someone else wrote the Lease between our read and our write.
            won = False
        except ApiError as error:
            self.connected = False
            log.warning("cannot reach Lease %s: %s", self.lease, error)
            return False
        self.connected = True
        return won

    async def _attempt(self) -> bool:
        now_wall = time.time()
        lease = await self._kube.get(self._path)
        if lease is None:
            await self._kube.create(
                group_path("coordination.k8s.io", "v1", "leases", self._election.namespace),
                {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {
                        "name": self._election.lease_name,
                        "namespace": self._election.namespace,
                    },
                    "spec": self._spec(now_wall, acquired=now_wall, transitions=0),
                },
            )
            self._remember(lease=None)
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        self._remember(lease)
        duration = spec.get("leaseDurationSeconds") or self._election.lease_duration
        expired = self._clock() > self._observed_at + float(duration)
        if holder and holder != self.identity and not expired:
            return False
        if holder == self.identity:
            new_spec = {**spec, **self._spec(now_wall, acquired=None, transitions=None)}
        else:
            new_spec = self._spec(
                now_wall,
                acquired=now_wall,
                transitions=int(spec.get("leaseTransitions") or 0) + 1,
            )
        await self._kube.replace(self._path, {**lease, "spec": new_spec})
        return True

    def _spec(
        self, now: float, *, acquired: float | None, transitions: int | None
    ) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self._election.lease_duration)),
            "renewTime": _micro_time(now),
        }
        if acquired is not None:
            spec["acquireTime"] = _micro_time(acquired)
        if transitions is not None:
            spec["leaseTransitions"] = transitions
        return spec

    def _remember(self, lease: dict[str, Any] | None) -> None:
        """Restart the expiry clock whenever the Lease's holder or renewTime changes."""
        spec = (lease or {}).get("spec") or {}
        record = (spec.get("holderIdentity"), spec.get("renewTime"))
        if record != self._observed:
            self._observed = record
            self._observed_at = self._clock()
