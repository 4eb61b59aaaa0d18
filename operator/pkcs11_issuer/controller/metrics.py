"""Prometheus metrics in cert-manager's style, and the HTTP listeners for them and the probes.

`Metrics` holds every series in its own registry (never the process-global one, so that tests
and embedded runs can build as many as they like) and is the `TokenObserver` the tokens report
their calls to. `HealthServer` serves `/metrics`, `/healthz` and `/readyz` with aiohttp.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import NamedTuple

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pkcs11_issuer.hsm import HsmError

PREFIX = "pkcs11_issuer_"
READY_CONDITIONS = ("True", "False", "Unknown")
ISSUANCE_RESULTS = ("issued", "failed")

# A signature on a local SoftHSM takes a fraction of a millisecond, one on a network HSM
# some milliseconds, and one queued behind a busy or recovering HSM seconds.
HSM_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
# An issuance may generate an RSA key in the HSM and waits for API round trips.
ISSUANCE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

TokenSessions = Callable[[], Mapping[str, tuple[int, int]]]


class _SessionsCollector(Collector):
    """Session counts read when scraped: they change with every call, and a gauge set on
    each change would cost the hot path a lock for a value that is rarely looked at."""

    def __init__(self) -> None:
        self.sessions: TokenSessions | None = None

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            PREFIX + "hsm_sessions",
            "PKCS#11 sessions per token: open, and in use by a call right now.",
            labels=["token", "state"],
        )
        if self.sessions is not None:
            for token, (open_, in_use) in sorted(self.sessions().items()):
                family.add_metric([token, "open"], open_)
                family.add_metric([token, "in_use"], in_use)
        yield family


class Metrics:
    """The operator's metrics; implements `pkcs11_issuer.hsm.TokenObserver`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._ready = Gauge(
            PREFIX + "certificate_ready_status",
            "The status of the Ready condition of a Certificate: 1 for the current status.",
            ["namespace", "name", "condition"],
            registry=self.registry,
        )
        self._expiration = Gauge(
            PREFIX + "certificate_expiration_timestamp_seconds",
            "The notAfter of a Certificate's current X.509 certificate, in Unix seconds.",
            ["namespace", "name"],
            registry=self.registry,
        )
        self._renewal = Gauge(
            PREFIX + "certificate_renewal_timestamp_seconds",
            "When a Certificate is due to be renewed, in Unix seconds.",
            ["namespace", "name"],
            registry=self.registry,
        )
        self._signing = Histogram(
            PREFIX + "hsm_signing_duration_seconds",
            "How long a signature in the HSM took, session wait and recovery included.",
            ["token"],
            buckets=HSM_BUCKETS,
            registry=self.registry,
        )
        self._calls = Histogram(
            PREFIX + "hsm_call_duration_seconds",
            "How long a PKCS#11 call took, by kind of call (sign, generate, find, ...).",
            ["token", "action"],
            buckets=HSM_BUCKETS,
            registry=self.registry,
        )
        self._errors = Counter(
            PREFIX + "hsm_errors",
            "PKCS#11 calls that failed, by CKR_* return value (or error class without one).",
            ["token", "action", "ckr"],
            registry=self.registry,
        )
        self._issuances = Counter(
            PREFIX + "issuances",
            "Certificate issuances, by result.",
            ["result"],
            registry=self.registry,
        )
        self._issuance_seconds = Histogram(
            PREFIX + "issuance_duration_seconds",
            "How long an issuance took, from request to signed certificate or failure.",
            buckets=ISSUANCE_BUCKETS,
            registry=self.registry,
        )
        # Both results from the start, so that rate() and alerts see a 0 before the first one.
        for result in ISSUANCE_RESULTS:
            self._issuances.labels(result)
        self._sessions = _SessionsCollector()
        self.registry.register(self._sessions)

    def certificate(
        self,
        namespace: str,
        name: str,
        *,
        ready: str,
        not_after: datetime | None,
        renewal: datetime | None,
    ) -> None:
        """A Certificate's state. `ready` is its Ready condition's status; as in cert-manager,
        any other value sets all three series to 0. The times must be timezone-aware; None
        (nothing issued yet) removes the series."""
        for condition in READY_CONDITIONS:
            self._ready.labels(namespace, name, condition).set(1 if condition == ready else 0)
        for gauge, moment in ((self._expiration, not_after), (self._renewal, renewal)):
            if moment is None:
                gauge.remove(namespace, name)
            else:
                gauge.labels(namespace, name).set(moment.timestamp())

    def forget_certificate(self, namespace: str, name: str) -> None:
        """The Certificate is gone: drop its series rather than report it forever."""
        self._ready.remove_by_labels({"namespace": namespace, "name": name})
        self._expiration.remove(namespace, name)
        self._renewal.remove(namespace, name)

    def hsm_call(self, token: str, action: str, seconds: float, error: HsmError | None) -> None:
        self._calls.labels(token, action).observe(seconds)
        if action == "sign":
            self._signing.labels(token).observe(seconds)
        if error is not None:
            self._errors.labels(token, action, error.ckr or type(error).__name__).inc()

    def watch_tokens(self, sessions: TokenSessions) -> None:
        """`sessions()` maps each token's name to its (open, in use) session counts; it is
        called at every scrape and replaces any earlier callback."""
        self._sessions.sessions = sessions

    def issuance(self, result: str, seconds: float) -> None:
        """One issuance ended: `result` is "issued" or "failed"."""
        self._issuances.labels(result).inc()
        self._issuance_seconds.observe(seconds)


class BoundPorts(NamedTuple):
    metrics: int | None
    health: int | None


class HealthServer:
    """`GET /metrics` on `metrics_port`; `GET /healthz` (200 while `alive()`, else 500) and
    `GET /readyz` (200 while `ready()`, else 503) on `health_port`.

    A port of None disables its endpoints; 0 binds an ephemeral port of its own (for tests),
    which `ports` reports after `start()`. Two equal non-zero ports share one listener."""

    def __init__(
        self,
        metrics: Metrics,
        *,
        host: str = "0.0.0.0",  # noqa: S104 - probes and scrapes come from outside the pod
        metrics_port: int | None,
        health_port: int | None,
        ready: Callable[[], bool],
        alive: Callable[[], bool],
    ) -> None:
        self.host = host
        self.metrics_port = metrics_port
        self.health_port = health_port
        self._metrics = metrics
        self._ready = ready
        self._alive = alive
        self._runners: list[web.AppRunner] = []
        self.ports = BoundPorts(None, None)

    async def start(self) -> None:
        metrics_port, health_port = self.metrics_port, self.health_port
        try:
            if metrics_port and metrics_port == health_port:
                port = await self._listen(metrics_port, metrics=True, health=True)
                self.ports = BoundPorts(port, port)
                return
            metrics = health = None
            if metrics_port is not None:
                metrics = await self._listen(metrics_port, metrics=True, health=False)
            if health_port is not None:
                health = await self._listen(health_port, metrics=False, health=True)
            self.ports = BoundPorts(metrics, health)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        runners, self._runners = self._runners, []
        for runner in runners:
            await runner.cleanup()
        self.ports = BoundPorts(None, None)

    async def _listen(self, port: int, *, metrics: bool, health: bool) -> int:
        app = web.Application()
        if metrics:
            app.router.add_get("/metrics", make_aiohttp_handler(self._metrics.registry))
        if health:
            app.router.add_get("/healthz", self._healthz)
            app.router.add_get("/readyz", self._readyz)
        # No access log: the kubelet probes every few seconds and would drown the real logs.
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        self._runners.append(runner)
        await web.TCPSite(runner, self.host, port).start()
        bound: int = runner.addresses[0][1]
        return bound

    async def _healthz(self, _request: web.Request) -> web.Response:
        if self._alive():
            return web.Response(text="ok")
        return web.Response(status=500, text="not alive")

    async def _readyz(self, _request: web.Request) -> web.Response:
        if self._ready():
            return web.Response(text="ok")
        return web.Response(status=503, text="not ready")
