"""Metrics as Prometheus scrapes them, and the probe endpoints, over real HTTP listeners."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from pkcs11_issuer.controller.metrics import BoundPorts, HealthServer, Metrics
from pkcs11_issuer.hsm import AuthenticationError, HsmUnavailableError, TokenObserver

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

NOT_AFTER = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
RENEWAL = datetime(2029, 12, 1, tzinfo=UTC)


def _server(
    metrics: Metrics,
    *,
    metrics_port: int | None = 0,
    health_port: int | None = 0,
    ready: Callable[[], bool] = lambda: True,
    alive: Callable[[], bool] = lambda: True,
) -> HealthServer:
    return HealthServer(
        metrics,
        host="127.0.0.1",
        metrics_port=metrics_port,
        health_port=health_port,
        ready=ready,
        alive=alive,
    )


async def _get(port: int | None, path: str) -> tuple[int, str, str]:
    assert port is not None
    async with (
        aiohttp.ClientSession() as client,
        client.get(f"http://127.0.0.1:{port}{path}") as response,
    ):
        return response.status, response.headers["Content-Type"], await response.text()


def scrape(metrics: Metrics) -> Samples:
    """Every sample a scrape of /metrics returns, by name and label set."""

    async def fetch() -> str:
        server = _server(metrics, health_port=None)
        await server.start()
        try:
            status, content_type, text = await _get(server.ports.metrics, "/metrics")
        finally:
            await server.stop()
        # The Prometheus text format unless the scraper asks for OpenMetrics.
        assert status == 200 and content_type.startswith("text/plain;")
        return text

    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(asyncio.run(fetch()))
        for sample in family.samples
    }


def sample(samples: Samples, metric: str, /, **labels: str) -> float | None:
    return samples.get((f"pkcs11_issuer_{metric}", frozenset(labels.items())))


def series(samples: Samples, name: str) -> set[frozenset[tuple[str, str]]]:
    return {labels for sample_name, labels in samples if sample_name == f"pkcs11_issuer_{name}"}


def certificates(samples: Samples, name: str) -> set[str]:
    """The Certificates (namespace/name) that a metric has series for."""
    return {
        f"{dict(labels)['namespace']}/{dict(labels)['name']}" for labels in series(samples, name)
    }


def test_ready_status_is_one_for_the_current_condition_and_zero_for_the_others() -> None:
    metrics = Metrics()
    metrics.certificate("apps", "web", ready="True", not_after=NOT_AFTER, renewal=RENEWAL)
    metrics.certificate("apps", "db", ready="Unknown", not_after=None, renewal=None)
    samples = scrape(metrics)
    for name, current in (("web", "True"), ("db", "Unknown")):
        for condition in ("True", "False", "Unknown"):
            value = sample(
                samples,
                "certificate_ready_status",
                namespace="apps",
                name=name,
                condition=condition,
            )
            assert value == (1.0 if condition == current else 0.0), (name, condition)
    web = {"namespace": "apps", "name": "web"}
    assert sample(samples, "certificate_expiration_timestamp_seconds", **web) == 1893553445.0
    assert sample(samples, "certificate_renewal_timestamp_seconds", **web) == RENEWAL.timestamp()
    assert series(samples, "certificate_expiration_timestamp_seconds") == {frozenset(web.items())}

    metrics.certificate("apps", "web", ready="False", not_after=None, renewal=None)
    samples = scrape(metrics)
    assert [
        sample(samples, "certificate_ready_status", **web, condition=condition)
        for condition in ("True", "False", "Unknown")
    ] == [0.0, 1.0, 0.0]
    assert series(samples, "certificate_expiration_timestamp_seconds") == set()
    assert series(samples, "certificate_renewal_timestamp_seconds") == set()


def test_forgotten_certificate_loses_all_its_series() -> None:
    metrics = Metrics()
    for name in ("web", "db"):
        metrics.certificate("apps", name, ready="True", not_after=NOT_AFTER, renewal=RENEWAL)
    metrics.forget_certificate("apps", "web")
    metrics.forget_certificate("apps", "never-seen")
    samples = scrape(metrics)
    assert len(series(samples, "certificate_ready_status")) == 3
    for name in (
        "certificate_ready_status",
        "certificate_expiration_timestamp_seconds",
        "certificate_renewal_timestamp_seconds",
    ):
        assert certificates(samples, name) == {"apps/db"}, name


def test_hsm_calls_feed_the_signing_histogram_and_the_error_counter() -> None:
    metrics = Metrics()
    observer: TokenObserver = metrics  # what the tokens are given
    observer.hsm_call("ca", "sign", 0.002, None)
    observer.hsm_call("ca", "sign", 0.003, HsmUnavailableError("down", ckr="CKR_DEVICE_ERROR"))
    observer.hsm_call("ca", "find", 0.001, AuthenticationError("refused"))
    samples = scrape(metrics)
    assert sample(samples, "hsm_signing_duration_seconds_count", token="ca") == 2.0
    assert sample(samples, "hsm_signing_duration_seconds_sum", token="ca") == 0.005
    assert sample(samples, "hsm_signing_duration_seconds_bucket", token="ca", le="0.0025") == 1.0
    assert series(samples, "hsm_signing_duration_seconds_count") == {frozenset({("token", "ca")})}
    assert sample(samples, "hsm_call_duration_seconds_count", token="ca", action="find") == 1.0
    assert sample(samples, "hsm_call_duration_seconds_count", token="ca", action="sign") == 2.0
    assert (
        sample(samples, "hsm_errors_total", token="ca", action="sign", ckr="CKR_DEVICE_ERROR") == 1
    )
    assert (
        sample(samples, "hsm_errors_total", token="ca", action="find", ckr="AuthenticationError")
        == 1.0
    )
    assert len(series(samples, "hsm_errors_total")) == 2


def test_sessions_are_read_from_the_callback_at_scrape_time() -> None:
    metrics = Metrics()
    assert series(scrape(metrics), "hsm_sessions") == set()
    counts = {"ca": (3, 1)}
    metrics.watch_tokens(lambda: counts)
    counts["sidecar"] = (0, 0)
    samples = scrape(metrics)
    assert {
        (dict(labels)["token"], dict(labels)["state"]): samples[(name, labels)]
        for name, labels in samples
        if name == "pkcs11_issuer_hsm_sessions"
    } == {
        ("ca", "open"): 3.0,
        ("ca", "in_use"): 1.0,
        ("sidecar", "open"): 0.0,
        ("sidecar", "in_use"): 0.0,
    }


def test_issuances_count_by_result_from_zero() -> None:
    metrics = Metrics()
    samples = scrape(metrics)
    assert sample(samples, "issuances_total", result="issued") == 0.0
    assert sample(samples, "issuances_total", result="failed") == 0.0
    metrics.issuance("issued", 1.5)
    metrics.issuance("issued", 0.5)
    metrics.issuance("failed", 30.0)
    samples = scrape(metrics)
    assert sample(samples, "issuances_total", result="issued") == 2.0
    assert sample(samples, "issuances_total", result="failed") == 1.0
    assert sample(samples, "issuance_duration_seconds_count") == 3.0
    assert sample(samples, "issuance_duration_seconds_sum") == 32.0


def test_each_metrics_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    first.issuance("issued", 1.0)
    assert first.registry is not second.registry
    assert sample(scrape(second), "issuances_total", result="issued") == 0.0


def test_probes_follow_their_callbacks_on_separate_listeners() -> None:
    state = {"alive": True, "ready": False}

    async def probe() -> None:
        server = _server(Metrics(), ready=lambda: state["ready"], alive=lambda: state["alive"])
        await server.start()
        try:
            metrics_port, health_port = server.ports
            assert metrics_port != health_port
            assert (await _get(health_port, "/healthz"))[::2] == (200, "ok")
            assert (await _get(health_port, "/readyz"))[0] == 503
            state.update(alive=False, ready=True)
            assert (await _get(health_port, "/healthz"))[0] == 500
            assert (await _get(health_port, "/readyz"))[::2] == (200, "ok")
            assert (await _get(health_port, "/metrics"))[0] == 404
            assert (await _get(metrics_port, "/healthz"))[0] == 404
        finally:
            await server.stop()
        assert server.ports == BoundPorts(None, None)

    asyncio.run(probe())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_equal_ports_share_one_listener_and_none_disables() -> None:
    async def probe(server: HealthServer, check: Callable[[BoundPorts], Awaitable[None]]) -> None:
        await server.start()
        try:
            await check(server.ports)
        finally:
            await server.stop()

    port = _free_port()

    async def shared(ports: BoundPorts) -> None:
        assert ports == BoundPorts(port, port)
        for path in ("/metrics", "/healthz", "/readyz"):
            assert (await _get(port, path))[0] == 200, path

    async def health_only(ports: BoundPorts) -> None:
        assert ports.metrics is None and ports.health is not None
        assert (await _get(ports.health, "/readyz"))[0] == 200

    asyncio.run(probe(_server(Metrics(), metrics_port=port, health_port=port), shared))
    asyncio.run(probe(_server(Metrics(), metrics_port=None), health_only))
