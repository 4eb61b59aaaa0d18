"""Figures 2 to 6: the operator as its own process on the real control plane, SoftHSM behind it.

Each HSM path gets a fresh control plane (etcd, kube-apiserver, kube-controller-manager on
127.0.0.1, about 5 s to start), a fresh SoftHSM token, and the real operator
(`pkcs11-issuer run`, started by `pkcs11_issuer.dev.operator.OperatorProcess` exactly as the
cluster tests start it) with one token in its configuration:

- `direct`: SoftHSM loaded into the operator;
- `sidecar`: `p11-kit-client.so` talking to a `p11-kit server` that serves the SoftHSM token over
  a unix socket, as the chart's sidecar does (figure 4);
- `spy`: OpenSC's `pkcs11-spy.so` in front of SoftHSM, which logs every PKCS#11 call (figure 5).
  Logging costs time, so nothing is timed on this path; it only counts.

On `direct` and `sidecar` the sequence is: start the operator and read its idle RSS (figure 3);
a CA (self-signed root Certificate, ECDSA P-256 key in the HSM, and a CA Issuer on its Secret);
N Certificates created at once and timed to Ready (figure 2); a restart with those N Ready
(figure 6); more Certificates up to the memory population and the RSS then (figure 3); and, with
the operator stopped for good, the API write ceiling replayed on the same API server (figure 2).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubeapi
import yaml
from kubeapi import Api, certificates_path, core_path, issuers_path, ready_status
from prometheus_client.parser import text_string_to_metric_families

from pkcs11_issuer.dev.controlplane import Binaries, ControlPlane, free_ports
from pkcs11_issuer.dev.operator import OperatorProcess, install_crds
from pkcs11_issuer.dev.p11kit import P11KitServer, p11kit_client_module
from pkcs11_issuer.dev.softhsm import SoftHsm, softhsm_module

PIN = "bench-pin"
CACHE = Path(__file__).resolve().parent.parent / ".cache" / "bench"
OPERATOR_NAMESPACE = "pkcs11-issuer"
NAMESPACE = "bench"
CEILING_NAMESPACE = "bench-ceiling"
CA_ISSUER = "bench-ca"
FINALIZER = "pkcs11-issuer.io/hsm-key-cleanup"
SPY_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/pkcs11/pkcs11-spy.so",
    "/usr/lib/aarch64-linux-gnu/pkcs11/pkcs11-spy.so",
    "/usr/lib/pkcs11/pkcs11-spy.so",
)
TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
# Idle: the operator used less than this share of one CPU over IDLE_WINDOW seconds, twice running.
IDLE_CPU_SHARE = 0.03
IDLE_WINDOW = 1.0
# Targets of issue 7.
TARGET_CERTS_PER_S = 50.0
TARGET_CEILING_RATIO = 0.25
TARGET_RSS_MIB = 150.0
TARGET_SPY_RATIO = 2.0
# The least a certificate with a fresh key, signed by a CA, needs from the HSM, in PKCS#11
# calls, given logged-in sessions and the CA key's handle kept from earlier (see README.md).
MINIMUM_CALLS = {
    "C_GenerateKeyPair": 1,  # the certificate's key pair, CKA_ID and CKA_LABEL in the template
    "C_GetAttributeValue": 1,  # its public key (CKA_EC_POINT), to put into the certificate
    "C_SignInit": 1,  # the CA's signature over the certificate
    "C_Sign": 1,  # one call: the signature's size is known from the key
}
# The design's proof of possession: the new key signs a CSR, which the issuer verifies.
CSR_CALLS = {"C_SignInit": 1, "C_Sign": 1}


def token_parent() -> Path:
    """Where SoftHSM keeps the benchmark's tokens: tmpfs where there is one, as the control
    plane keeps etcd's data. SoftHSM writes a file per key object (and truncates it on every
    change), so on a disk the figures would measure the disk, which no real HSM puts into the
    operator's process."""
    shm = Path("/dev/shm")  # noqa: S108
    return shm if os.access(shm, os.W_OK) else CACHE


def spy_module() -> str | None:
    return next((path for path in SPY_CANDIDATES if os.path.isfile(path)), None)


@dataclass(frozen=True)
class Settings:
    certificates: int = 500  # created at once (figure 2), then Ready at the restart (figure 6)
    memory_certificates: int = 1000  # Ready when the RSS is read (figure 3)
    spy_certificates: int = 50  # counted through pkcs11-spy (figure 5)
    spy_warmup: int = 10  # issued before counting starts
    concurrency: int = 4  # the operator's `concurrency`, and the ceiling client's
    create_concurrency: int = 32  # requests in flight while creating Certificates
    figures: frozenset[int] = frozenset({2, 3, 5, 6})
    py_spy: str | None = None  # record a profile of the operator during the timed batch


# -- the processes ------------------------------------------------------------------------


class Cluster:
    """Control plane, SoftHSM token, `p11-kit server` (sidecar path) and the operator."""

    def __init__(self, path: str, work: Path, settings: Settings, binaries: Binaries) -> None:
        self.path = path
        self.work = work
        self.settings = settings
        self.plane = ControlPlane(work / "plane", binaries)
        self._token_dir = Path(tempfile.mkdtemp(prefix="pkcs11-issuer-bench-", dir=token_parent()))
        self.softhsm = SoftHsm.create(self._token_dir)
        self.token_label = f"bench-{path}"
        self.spy_log = work / "pkcs11-spy.log"
        self.sidecar: P11KitServer | None = None
        self._process: OperatorProcess | None = None

    @property
    def process(self) -> OperatorProcess:
        assert self._process is not None
        return self._process

    @property
    def pid(self) -> int:
        pid = self.process.pid
        assert pid is not None
        return pid

    def _modules(self) -> tuple[dict[str, str], str, dict[str, str]]:
        """The config's modules, the token's module name, and the environment they need."""
        softhsm = softhsm_module()
        if softhsm is None:
            raise SystemExit("SoftHSM2 is not installed: run `make bootstrap`")
        if self.path == "direct":
            return {"softhsm": softhsm}, "softhsm", {}
        if self.path == "sidecar":
            client = p11kit_client_module()
            if client is None:
                raise SystemExit("p11-kit-client.so is missing: apt-get install p11-kit-modules")
            assert self.sidecar is not None
            return {"p11kit": client}, "p11kit", {"P11_KIT_SERVER_ADDRESS": self.sidecar.address}
        spy = spy_module()
        if spy is None:
            raise SystemExit("pkcs11-spy.so is missing: apt-get install opensc")
        env = {"PKCS11SPY": softhsm, "PKCS11SPY_OUTPUT": str(self.spy_log)}
        return {"spy": spy}, "spy", env

    def start(self) -> Cluster:
        self.softhsm.init_token(self.token_label, PIN)
        self.plane.start()
        install_crds(self.plane)
        for namespace in (OPERATOR_NAMESPACE, NAMESPACE, CEILING_NAMESPACE):
            self.plane.kubectl("create", "namespace", namespace)
        pin_secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "bench-pin", "namespace": OPERATOR_NAMESPACE},
            "stringData": {"pin": PIN},
        }
        self.plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(pin_secret))
        if self.path == "sidecar":
            softhsm = softhsm_module()
            assert softhsm is not None
            self.sidecar = P11KitServer(
                softhsm,
                f"pkcs11:token={self.token_label}",
                self.work / "p11-kit.sock",
                self.softhsm.env(),
            ).start()
        modules, module, env = self._modules()
        health, metrics = free_ports(2)
        concurrency = self.settings.concurrency
        config = {
            "modules": modules,
            "clusterResourceNamespace": OPERATOR_NAMESPACE,
            "concurrency": concurrency,
            "tokens": [
                {
                    "name": "bench",
                    "module": module,
                    "uri": f"pkcs11:token={self.token_label}",
                    "pin": {"secret": {"name": "bench-pin"}},
                    "maxSessions": max(8, concurrency + 2),
                    "grants": [{"namespaces": ["*"]}],
                }
            ],
            "health": {"port": health},
            "metrics": {"port": metrics},
        }
        config_path = self.work / "operator-config.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self._process = OperatorProcess(
            config_path,
            kubeconfig=self.plane.kubeconfig_path,
            env={**self.softhsm.env(), **env, "PATH": os.environ.get("PATH", "")},
            log_path=self.work / "operator.log",
            health_port=health,
            metrics_port=metrics,
        )
        self._process.start()
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()
        if self.sidecar is not None:
            self.sidecar.stop()
        self.plane.stop()
        shutil.rmtree(self._token_dir, ignore_errors=True)

    def __enter__(self) -> Cluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- what the operator process uses ---------------------------------------------------

    def cpu_seconds(self, pid: int | None = None) -> float:
        """User + system CPU time of a process, all its threads."""
        fields = Path(f"/proc/{pid or self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS_PER_SECOND

    def memory(self) -> dict[str, float]:
        """VmRSS and VmHWM (peak RSS) of the operator, in MiB."""
        values = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                values[name] = round(int(rest.split()[0]) / 1024, 1)
        return values

    def cpu_snapshot(self) -> dict[str, float]:
        """CPU seconds so far of the operator, each control-plane process, the sidecar, this
        benchmark process, and the whole machine (all CPUs, busy = not idle or iowait)."""
        snapshot = {"operator": self.cpu_seconds()}
        for name, pid in self.plane.pids.items():
            with contextlib.suppress(OSError):
                snapshot[name] = self.cpu_seconds(pid)
        if self.sidecar is not None:
            total = 0.0
            for pid in _process_group_of(str(self.sidecar.socket_path)):
                with contextlib.suppress(OSError):
                    total += self.cpu_seconds(pid)
            snapshot["p11-kit server"] = total
        times = os.times()
        snapshot["benchmark client"] = times.user + times.system
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        snapshot["machine (all processes)"] = (sum(ticks) - ticks[3] - ticks[4]) / TICKS_PER_SECOND
        return snapshot

    async def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """The operator's own metrics: (sample name, sorted labels) -> value."""
        text = await asyncio.to_thread(self.process.metrics)
        samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return samples

    async def wait_idle(self, timeout: float = 600.0) -> float:
        """Seconds until the operator has been idle for two windows running (see IDLE_*)."""
        started = time.monotonic()
        quiet = 0
        before = self.cpu_seconds()
        while quiet < 2:
            await asyncio.sleep(IDLE_WINDOW)
            now = self.cpu_seconds()
            quiet = quiet + 1 if now - before < IDLE_CPU_SHARE * IDLE_WINDOW else 0
            before = now
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"the operator was still busy after {timeout:.0f}s")
        return time.monotonic() - started - 2 * IDLE_WINDOW


def _process_group_of(needle: str) -> list[int]:
    """Every process in the process group of the process whose command line has `needle`
    (`p11-kit server` forks a process per client into its own group)."""
    groups: dict[int, list[int]] = {}
    leaders = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            group = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2])
            groups.setdefault(group, []).append(int(entry.name))
            if needle.encode() in (entry / "cmdline").read_bytes():
                leaders.add(group)
    return [pid for group in leaders for pid in groups[group]]


def operator_counts(
    before: dict[tuple[str, tuple[tuple[str, str], ...]], float],
    after: dict[tuple[str, tuple[tuple[str, str], ...]], float],
) -> dict[str, Any]:
    """HSM calls (count and seconds) by kind, and issuances, between two metric snapshots."""
    hsm: dict[str, dict[str, float]] = {}
    issuances: dict[str, float] = {}
    for (name, labels), value in after.items():
        delta = value - before.get((name, labels), 0.0)
        label = dict(labels)
        if name.startswith("pkcs11_issuer_hsm_call_duration_seconds_"):
            part = name.rsplit("_", 1)[1]  # count or sum
            if part in ("count", "sum") and delta:
                hsm.setdefault(label["action"], {})[part] = round(delta, 4)
        elif name == "pkcs11_issuer_issuances_total":
            issuances[label["result"]] = delta
        elif name.startswith("pkcs11_issuer_issuance_duration_seconds_") and name[-3:] in (
            "sum",
            "unt",
        ):
            issuances["seconds_" + name.rsplit("_", 1)[1]] = round(delta, 3)
    return {"hsm_calls": hsm, "issuances": issuances}


# -- Certificates -------------------------------------------------------------------------


def certificate_body(name: str, namespace: str = NAMESPACE) -> dict[str, Any]:
    """A leaf as a workload would ask for one: ECDSA P-256 key generated in the HSM, signed
    by the CA Issuer."""
    host = f"{name}.bench.example.com"
    return {
        "apiVersion": "pkcs11-issuer.io/v1alpha1",
        "kind": "Certificate",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "secretName": f"{name}-tls",
            "commonName": host,
            "dnsNames": [host],
            "usages": ["digital signature", "server auth"],
            "privateKey": {"algorithm": "ECDSA", "size": 256},
            "issuerRef": {"name": CA_ISSUER},
        },
    }


async def create_ca(api: Api) -> None:
    """A self-signed root whose ECDSA P-256 key is generated in the HSM, and a CA Issuer on
    the Secret the operator writes for it."""
    await api.create(
        issuers_path(NAMESPACE),
        {
            "apiVersion": "pkcs11-issuer.io/v1alpha1",
            "kind": "Issuer",
            "metadata": {"name": "selfsigned", "namespace": NAMESPACE},
            "spec": {"selfSigned": {}},
        },
    )
    await api.create(
        certificates_path(NAMESPACE),
        {
            "apiVersion": "pkcs11-issuer.io/v1alpha1",
            "kind": "Certificate",
            "metadata": {"name": "bench-root", "namespace": NAMESPACE},
            "spec": {
                "secretName": "bench-root",
                "isCA": True,
                "commonName": "Bench Root CA",
                "duration": "87600h",
                "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Never"},
                "issuerRef": {"name": "selfsigned"},
            },
        },
    )
    await api.create(
        issuers_path(NAMESPACE),
        {
            "apiVersion": "pkcs11-issuer.io/v1alpha1",
            "kind": "Issuer",
            "metadata": {"name": CA_ISSUER, "namespace": NAMESPACE},
            "spec": {"ca": {"secretName": "bench-root"}},
        },
    )
    await api.wait_ready(
        issuers_path(NAMESPACE, CA_ISSUER), timeout=120, what=f"Issuer {CA_ISSUER}"
    )


def percentile(values: list[float], share: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * share
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@contextlib.asynccontextmanager
async def profiled(cluster: Cluster, py_spy: str | None) -> AsyncIterator[None]:
    """With py-spy: a sampling profile of the operator (Python and native frames, every
    thread) while the block runs, as speedscope JSON next to the operator's log."""
    if py_spy is None:
        yield
        return
    output = cluster.work / "operator-profile.speedscope.json"
    # BENCH_PY_SPY_FLAGS="--gil" shows only what holds the GIL: the serialised Python work.
    flags = os.environ.get("BENCH_PY_SPY_FLAGS", "--rate 50 --native").split()
    recorder = await asyncio.create_subprocess_exec(
        py_spy, "record", "--pid", str(cluster.pid), *flags,
        "--threads", "--format", "speedscope", "--output", str(output),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    await asyncio.sleep(0.5)  # attached
    try:
        yield
    finally:
        recorder.send_signal(signal.SIGINT)
        _out, errors = await recorder.communicate()
        if recorder.returncode not in (0, -signal.SIGINT):
            print(f"  py-spy: {errors.decode(errors='replace').strip()[-300:]}")


@dataclass
class Batch:
    """What one batch of Certificates, created at once, did."""

    names: list[str]
    sent: dict[str, float] = field(default_factory=dict)
    created: dict[str, float] = field(default_factory=dict)
    ready: dict[str, float] = field(default_factory=dict)
    first_sent: float = 0.0
    all_created: float = 0.0
    all_ready: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds used until all_ready
    writes: Counter[tuple[str, str]] = field(default_factory=Counter)  # the operator's
    reads: Counter[tuple[str, str]] = field(default_factory=Counter)
    operator: dict[str, Any] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return self.all_ready - self.first_sent

    def latencies(self) -> list[float]:
        """create→Ready per Certificate: from the create call's answer to the watch event
        that shows Ready=True arriving here."""
        return [self.ready[name] - self.created[name] for name in self.names]


async def issue_batch(
    cluster: Cluster,
    api: Api,
    names: list[str],
    *,
    create_concurrency: int,
    py_spy: str | None = None,
) -> Batch:
    """Create `names` at once and wait until each is Ready (by a watch opened beforehand),
    then until the operator is idle, counting its API writes and HSM calls meanwhile. With
    `py_spy`, the operator is profiled from the first create until the last Ready."""
    batch = Batch(names)
    wanted = set(names)
    path = certificates_path(NAMESPACE)
    _items, version = await api.list_items(path)
    requests_before = await api.request_counts()
    metrics_before = await cluster.metrics()
    cpu_before = cluster.cpu_snapshot()
    everything_ready = asyncio.Event()
    timeout = 120.0 + 0.5 * len(names)

    async with profiled(cluster, py_spy), api.watch(path, version) as events:

        async def follow() -> None:
            async for arrived, _type, body in events:
                name = body["metadata"]["name"]
                if name in wanted and name not in batch.ready and ready_status(body) == "True":
                    batch.ready[name] = arrived
                    if len(batch.ready) == len(wanted):
                        everything_ready.set()
                        return

        watcher = asyncio.create_task(follow())
        limit = asyncio.Semaphore(create_concurrency)

        async def create(name: str) -> None:
            async with limit:
                batch.sent[name] = time.monotonic()
                await api.create(path, certificate_body(name))
                batch.created[name] = time.monotonic()

        batch.first_sent = time.monotonic()
        await asyncio.gather(*(create(name) for name in names))
        batch.all_created = time.monotonic()
        try:
            await asyncio.wait_for(everything_ready.wait(), timeout)
        except TimeoutError:
            missing = sorted(wanted - set(batch.ready))
            raise TimeoutError(
                f"{len(missing)} of {len(names)} Certificates not Ready after {timeout:.0f}s "
                f"(first: {missing[:3]}); operator log: {cluster.process.log_path}"
            ) from None
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
    batch.all_ready = max(batch.ready.values())
    cpu_after = cluster.cpu_snapshot()
    batch.cpu = {name: round(cpu_after[name] - cpu_before.get(name, 0.0), 2) for name in cpu_after}
    await cluster.wait_idle()
    requests_after = await api.request_counts()
    batch.writes = kubeapi.operator_writes(requests_before, requests_after)
    batch.writes[("POST", "certificates")] -= len(names)  # ours, not the operator's
    batch.writes = +batch.writes  # drop zeros
    batch.reads = kubeapi.reads(requests_before, requests_after)
    batch.operator = operator_counts(metrics_before, await cluster.metrics())
    return batch


def names(prefix: str, start: int, stop: int) -> list[str]:
    return [f"{prefix}-{index:05d}" for index in range(start, stop)]


# -- figure 2: end to end, and the API write ceiling ---------------------------------------


def e2e_figure(batch: Batch) -> dict[str, Any]:
    count = len(batch.names)
    latencies = batch.latencies()
    rate = count / batch.seconds
    cpu = {name: round(seconds / batch.seconds, 2) for name, seconds in batch.cpu.items()}
    hsm = batch.operator["hsm_calls"]
    return {
        "certificates": count,
        "seconds_to_all_ready": round(batch.seconds, 2),
        "seconds_to_all_created": round(batch.all_created - batch.first_sent, 2),
        "certificates_per_s": round(rate, 1),
        "latency_s": {
            "p50": round(percentile(latencies, 0.50), 3),
            "p95": round(percentile(latencies, 0.95), 3),
            "p99": round(percentile(latencies, 0.99), 3),
            "max": round(max(latencies), 3),
        },
        # CPUs busy on average while the batch ran (1.0 = one core all the time), and CPU
        # milliseconds per Certificate.
        "cpu_share": cpu,
        "cpu_ms_per_certificate": {
            name: round(1000 * seconds / count, 1) for name, seconds in batch.cpu.items()
        },
        "api_writes_per_certificate": {
            f"{verb} {resource}": round(n / count, 3)
            for (verb, resource), n in batch.writes.items()
        },
        "api_writes_per_certificate_total": round(sum(batch.writes.values()) / count, 3),
        "api_reads_per_certificate": {
            f"{verb} {resource}": round(n / count, 3) for (verb, resource), n in batch.reads.items()
        },
        "hsm_calls_per_certificate": {
            action: {
                "calls": round(values.get("count", 0) / count, 2),
                "ms": round(1000 * values.get("sum", 0) / max(values.get("count", 1), 1), 3),
            }
            for action, values in hsm.items()
        },
        "operator_issuance_mean_s": round(
            batch.operator["issuances"].get("seconds_sum", 0.0)
            / max(batch.operator["issuances"].get("seconds_count", 1), 1),
            3,
        ),
    }


# The order in which the operator sends an issuance's writes; the replay keeps it.
_WRITE_ORDER = {
    ("PATCH", "certificates"): 0,  # finalizer
    ("POST", "secrets"): 1,
    ("PUT", "secrets"): 2,
    ("PATCH", "secrets"): 3,
    ("PATCH", "certificates/status"): 4,
    ("POST", "events"): 5,
}


def _strip(body: dict[str, Any]) -> dict[str, Any]:
    """A body as a client would send it: without what the API server fills in."""
    metadata = {
        key: value
        for key, value in body["metadata"].items()
        if key not in ("uid", "resourceVersion", "creationTimestamp", "managedFields", "generation")
    }
    return {**body, "metadata": metadata}


class _Replay:
    """The writes of one issuance, as the operator sends them, against fresh Certificates in
    CEILING_NAMESPACE: bodies copied from what the operator wrote in the timed batch."""

    def __init__(
        self,
        api: Api,
        secret: dict[str, Any],
        status: dict[str, Any],
        event: dict[str, Any] | None,
    ) -> None:
        self.api = api
        self.secret = _strip(secret)
        self.status = status
        self.event = event
        self.objects: dict[str, dict[str, Any]] = {}  # Certificate name -> latest body
        self.secret_versions: dict[str, str] = {}  # Secret name -> resourceVersion
        self.not_replayed: Counter[str] = Counter()
        self._event_numbers = itertools.count()

    async def precreate(self, names: list[str]) -> None:
        limit = asyncio.Semaphore(32)

        async def create(name: str) -> None:
            async with limit:
                self.objects[name] = await self.api.create(
                    certificates_path(CEILING_NAMESPACE),
                    certificate_body(name, CEILING_NAMESPACE),
                )

        await asyncio.gather(*(create(name) for name in names))

    def _secret(self, name: str, secret_name: str) -> dict[str, Any]:
        metadata = self.secret["metadata"]
        owner = {**metadata["ownerReferences"][0], "name": name}
        owner["uid"] = self.objects[name]["metadata"]["uid"]
        labels = {**metadata.get("labels", {}), "pkcs11-issuer.io/certificate-name": name}
        return {
            **self.secret,
            "metadata": {
                **metadata,
                "name": secret_name,
                "namespace": CEILING_NAMESPACE,
                "labels": labels,
                "ownerReferences": [owner],
            },
        }

    def _event(self, name: str, index: int) -> dict[str, Any]:
        assert self.event is not None
        metadata = self.objects[name]["metadata"]
        body = _strip(self.event)
        body["metadata"] = {"name": f"{name}.{index:x}", "namespace": CEILING_NAMESPACE}
        body["involvedObject"] = {
            **self.event["involvedObject"],
            "namespace": CEILING_NAMESPACE,
            "name": name,
            "uid": metadata["uid"],
            "resourceVersion": metadata["resourceVersion"],
        }
        return body

    async def write(self, kind: tuple[str, str], name: str) -> None:
        api, secret_name = self.api, f"{name}-tls"
        if kind == ("PATCH", "certificates"):  # the finalizer, as the operator adds it
            version = self.objects[name]["metadata"]["resourceVersion"]
            patch = {"metadata": {"finalizers": [FINALIZER], "resourceVersion": version}}
            path = certificates_path(CEILING_NAMESPACE, name)
            self.objects[name] = await api.merge_patch(path, patch)
        elif kind == ("PATCH", "certificates/status"):
            path = certificates_path(CEILING_NAMESPACE, name, "status")
            self.objects[name] = await api.merge_patch(path, {"status": self.status})
        elif kind == ("POST", "secrets"):
            body = self._secret(name, secret_name)
            if secret_name in self.secret_versions:  # a second one in the same issuance
                body["metadata"]["name"] = secret_name = f"{secret_name}-{len(self.objects)}"
            created = await api.create(core_path("secrets", CEILING_NAMESPACE), body)
            self.secret_versions[secret_name] = created["metadata"]["resourceVersion"]
        elif kind == ("PUT", "secrets") and secret_name in self.secret_versions:
            body = self._secret(name, secret_name)
            body["metadata"]["resourceVersion"] = self.secret_versions[secret_name]
            path = core_path("secrets", CEILING_NAMESPACE, secret_name)
            replaced = await api.request("PUT", path, body)
            self.secret_versions[secret_name] = replaced["metadata"]["resourceVersion"]
        elif kind == ("POST", "events") and self.event is not None:
            body = self._event(name, next(self._event_numbers))
            await api.create(core_path("events", CEILING_NAMESPACE), body)
        else:
            self.not_replayed[f"{kind[0]} {kind[1]}"] += 1


async def write_ceiling(
    api: Api, batch: Batch, *, issuances: int, concurrency: int
) -> dict[str, Any]:
    """What the API server sustains of the writes one issuance needs, with the operator
    stopped: the same writes (kind, order, body) as the batch's per Certificate, replayed by
    `concurrency` clients for `issuances` fresh Certificates."""
    count = len(batch.names)
    mix = {kind: n for kind, n in batch.writes.items() if kind in _WRITE_ORDER}
    sample = batch.names[0]
    secret = await api.get(core_path("secrets", NAMESPACE, f"{sample}-tls"))
    certificate = await api.get(certificates_path(NAMESPACE, sample))
    assert secret is not None and certificate is not None
    listed = await api.request(
        "GET",
        core_path("events", NAMESPACE),
        params={"fieldSelector": f"involvedObject.name={sample}", "limit": "20"},
    )
    events = listed.get("items") or []
    issued = [e for e in events if e.get("reason") == "Issued"] or events
    replay = _Replay(api, secret, certificate["status"], issued[0] if issued else None)
    targets = names("ceiling", 0, issuances)
    await replay.precreate(targets)  # not timed: the user's writes, not the issuance's

    # Issuance i gets floor((i+1)·n/count) - floor(i·n/count) writes of a kind that the batch
    # sent n times for `count` Certificates: the same mix, the same writes per issuance.
    def plan(i: int) -> list[tuple[str, str]]:
        writes = []
        for kind in sorted(mix, key=_WRITE_ORDER.__getitem__):
            n = mix[kind]
            writes += [kind] * ((i + 1) * n // count - i * n // count)
        return writes

    queue = iter(enumerate(targets))
    latencies: dict[tuple[str, str], list[float]] = {}

    async def client() -> None:
        for i, name in queue:
            for kind in plan(i):
                began = time.monotonic()
                await replay.write(kind, name)
                latencies.setdefault(kind, []).append(time.monotonic() - began)

    started = time.monotonic()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    seconds = time.monotonic() - started
    sent = sum(len(values) for values in latencies.values()) - sum(replay.not_replayed.values())
    skipped = {f"{verb} {resource}": n for (verb, resource), n in batch.writes.items()
               if (verb, resource) not in _WRITE_ORDER}  # fmt: skip
    return {
        # What the operator keeps per Certificate in memory, roughly: the body as JSON.
        "sample_bytes": {
            "certificate": len(json.dumps(certificate)),
            "certificate_managed_fields": len(
                json.dumps(certificate["metadata"].get("managedFields"))
            ),
            "secret": len(json.dumps(secret)),
        },
        "issuances": issuances,
        "clients": concurrency,
        "writes_per_issuance": round(sum(mix.values()) / count, 3),
        "writes": sent,
        "seconds": round(seconds, 2),
        "writes_per_s": round(sent / seconds, 1),
        "issuances_per_s": round(issuances / seconds, 1),
        "not_replayed": dict(replay.not_replayed) | skipped,
        # Mean answer time of each kind of write, in milliseconds.
        "latency_ms": {
            f"{verb} {resource}": round(1000 * sum(values) / len(values), 1)
            for (verb, resource), values in sorted(latencies.items())
        },
    }


# -- figure 6: restart ---------------------------------------------------------------------


async def restart_figure(cluster: Cluster, api: Api, ready: int) -> dict[str, Any]:
    """SIGTERM the operator and start it again with `ready` Certificates Ready; what it sends
    until it is idle again."""
    requests_before = await api.request_counts()
    spy_offset = cluster.spy_log.stat().st_size if cluster.spy_log.exists() else 0
    started = time.monotonic()
    await asyncio.to_thread(cluster.process.stop)
    await asyncio.to_thread(cluster.process.start)
    ready_after = time.monotonic() - started
    idle_after = ready_after + await cluster.wait_idle()
    requests_after = await api.request_counts()
    metrics = await cluster.metrics()
    counts = operator_counts({}, metrics)
    writes = kubeapi.operator_writes(requests_before, requests_after)
    hsm = counts["hsm_calls"]
    figure: dict[str, Any] = {
        "ready_certificates": ready,
        "seconds_to_ready": round(ready_after, 2),
        "seconds_to_idle": round(idle_after, 2),
        "signatures": int(hsm.get("sign", {}).get("count", 0)),
        "key_generations": int(hsm.get("generate", {}).get("count", 0)),
        "issuances": int(counts["issuances"].get("issued", 0)),
        "api_writes": sum(writes.values()),
        "api_writes_by_kind": {f"{verb} {resource}": n for (verb, resource), n in writes.items()},
        "api_reads_by_kind": {
            f"{verb} {resource}": n
            for (verb, resource), n in kubeapi.reads(requests_before, requests_after).items()
        },
        "hsm_calls_by_kind": {action: int(v.get("count", 0)) for action, v in hsm.items()},
        "rss_mib_after_restart": cluster.memory(),
    }
    if cluster.spy_log.exists():
        figure["pkcs11_calls"] = dict(spy_calls(cluster.spy_log, spy_offset))
    figure["met"] = figure["signatures"] == 0 and figure["api_writes"] == 0
    return figure


# -- figure 5: PKCS#11 calls ----------------------------------------------------------------

_SPY_CALL = re.compile(rb"^\d+: (C_\w+)$", re.MULTILINE)


def spy_calls(log: Path, offset: int) -> Counter[str]:
    with log.open("rb") as handle:
        handle.seek(offset)
        text = handle.read()
    return Counter(match.decode() for match in _SPY_CALL.findall(text))


def spy_figure(calls: Counter[str], certificates: int) -> dict[str, Any]:
    per = {name: round(n / certificates, 2) for name, n in sorted(calls.items())}
    total = sum(calls.values()) / certificates
    minimum = sum(MINIMUM_CALLS.values())
    with_csr = minimum + sum(CSR_CALLS.values())
    ratio = total / minimum
    return {
        "certificates": certificates,
        "calls_per_certificate": per,
        "calls_per_certificate_total": round(total, 2),
        "minimum": MINIMUM_CALLS,
        "minimum_total": minimum,
        "minimum_with_csr_total": with_csr,
        "ratio": round(ratio, 2),
        "ratio_to_minimum_with_csr": round(total / with_csr, 2),
        "target": f"<= {TARGET_SPY_RATIO:.1f}",
        "met": ratio <= TARGET_SPY_RATIO,
    }


# -- one path, all its figures ---------------------------------------------------------------


def _log_batch(log: Callable[[str], None], what: str, batch: Batch) -> None:
    latencies = batch.latencies()
    log(
        f"  {what}: {len(batch.names)} Ready in {batch.seconds:.1f}s "
        f"({len(batch.names) / batch.seconds:.1f}/s), p50 {percentile(latencies, 0.5):.2f}s "
        f"p99 {percentile(latencies, 0.99):.2f}s; operator writes/cert "
        f"{sum(batch.writes.values()) / len(batch.names):.2f} "
        f"({kubeapi.describe(batch.writes, len(batch.names))})"
    )


async def _run_path(
    cluster: Cluster, settings: Settings, log: Callable[[str], None]
) -> dict[str, Any]:
    result: dict[str, Any] = {"path": cluster.path}
    figures = settings.figures
    work = cluster.work
    async with Api(cluster.plane.kubeconfig_path, work / "client") as api:
        await cluster.wait_idle()
        idle = cluster.memory()
        log(f"  operator idle: RSS {idle['VmRSS']} MiB")
        await create_ca(api)
        await cluster.wait_idle()
        if cluster.path == "spy":
            return result | await _spy(cluster, api, settings, log)
        first = settings.certificates
        batch = await issue_batch(
            cluster,
            api,
            names("leaf", 0, first),
            create_concurrency=settings.create_concurrency,
            py_spy=settings.py_spy,
        )
        _log_batch(log, "end to end", batch)
        result["e2e"] = e2e_figure(batch)
        if 6 in figures:
            restart = await restart_figure(cluster, api, ready=first + 1)
            result["restart"] = restart
            log(
                f"  restart with {first + 1} Ready: idle after {restart['seconds_to_idle']}s, "
                f"{restart['signatures']} signatures, {restart['api_writes']} API writes, "
                f"HSM calls {restart['hsm_calls_by_kind']}"
            )
        if 3 in figures:
            total = max(settings.memory_certificates, first)
            if total > first:
                more = await issue_batch(
                    cluster,
                    api,
                    names("leaf", first, total),
                    create_concurrency=settings.create_concurrency,
                )
                _log_batch(log, "more", more)
                result["e2e_more"] = e2e_figure(more)
            await cluster.wait_idle()
            loaded = cluster.memory()
            result["memory"] = {
                "idle_mib": idle,
                "ready_certificates": total + 1,
                "loaded_mib": loaded,
                "per_1000_certificates_mib": round(
                    (loaded["VmRSS"] - idle["VmRSS"]) / total * 1000, 1
                ),
                "target": f"<= {TARGET_RSS_MIB:.0f} MiB at 1000",
                "met": loaded["VmRSS"] <= TARGET_RSS_MIB,
            }
            log(f"  RSS with {total + 1} Ready: {loaded['VmRSS']} MiB (peak {loaded['VmHWM']})")
        await asyncio.to_thread(cluster.process.stop)
        if 2 in figures:
            ceiling = await write_ceiling(
                api, batch, issuances=settings.certificates, concurrency=settings.concurrency
            )
            e2e = result["e2e"]
            e2e["ceiling"] = ceiling
            e2e["ceiling_ratio"] = round(e2e["certificates_per_s"] / ceiling["issuances_per_s"], 3)
            e2e["met"] = (
                e2e["certificates_per_s"] >= TARGET_CERTS_PER_S
                and e2e["ceiling_ratio"] >= TARGET_CEILING_RATIO
            )
            log(
                f"  API write ceiling: {ceiling['writes_per_s']:.0f} writes/s ÷ "
                f"{ceiling['writes_per_issuance']:.2f} per issuance = "
                f"{ceiling['issuances_per_s']:.0f} issuances/s; ratio {e2e['ceiling_ratio']:.2f}"
            )
    return result


async def _spy(
    cluster: Cluster, api: Api, settings: Settings, log: Callable[[str], None]
) -> dict[str, Any]:
    warm = await issue_batch(
        cluster,
        api,
        names("warm", 0, settings.spy_warmup),
        create_concurrency=settings.create_concurrency,
    )
    _log_batch(log, "warm-up", warm)
    offset = cluster.spy_log.stat().st_size
    batch = await issue_batch(
        cluster,
        api,
        names("leaf", 0, settings.spy_certificates),
        create_concurrency=settings.create_concurrency,
    )
    _log_batch(log, "counted", batch)
    figure = spy_figure(spy_calls(cluster.spy_log, offset), settings.spy_certificates)
    figure["operator_hsm_calls_per_certificate"] = e2e_figure(batch)["hsm_calls_per_certificate"]
    log(
        f"  PKCS#11 calls per certificate: {figure['calls_per_certificate_total']} "
        f"(minimum {figure['minimum_total']}): {figure['calls_per_certificate']}"
    )
    result: dict[str, Any] = {"spy": figure}
    if 6 in settings.figures:
        ready = settings.spy_warmup + settings.spy_certificates + 1
        restart = await restart_figure(cluster, api, ready=ready)
        result["restart"] = restart
        log(f"  restart with {ready} Ready: PKCS#11 calls {restart.get('pkcs11_calls')}")
    return result


def run_path(
    path: str,
    work: Path,
    settings: Settings,
    binaries: Binaries,
    log: Callable[[str], None],
) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with Cluster(path, work, settings, binaries) as cluster:
        log(f"{path}: control plane and operator up in {time.monotonic() - started:.1f}s")
        return asyncio.run(_run_path(cluster, settings, log))
