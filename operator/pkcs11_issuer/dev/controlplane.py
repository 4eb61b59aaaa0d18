"""A real Kubernetes control plane on 127.0.0.1: etcd, kube-apiserver, kube-controller-manager.

Built for the cluster tests and `pkcs11-issuer dev cluster`: generated certificates, RBAC on,
service-account tokens signed by a generated key, and the controllers that garbage-collect,
delete namespaces and mint service accounts. There is no kubelet and no scheduler, so Pods never
run; everything an operator does through the API works.

Processes are stopped on `stop()`, on leaving the `with` block, at interpreter exit, and (unless
started for `dev cluster up`, which outlives its caller) when the Python process dies.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import ctypes
import fcntl
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

from pkcs11_issuer.dev import pki

BINARIES_SCRIPT = Path("scripts") / "k8s-binaries.sh"
# Controllers that API clients can observe; the rest manage nodes and Pods, which do not exist
# here. Cluster-role aggregation makes the built-in admin/edit/view roles usable in RBAC tests;
# the root-CA publisher gives namespaces the kube-root-ca.crt ConfigMap that in-cluster clients
# expect.
CONTROLLERS = (
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "clusterrole-aggregation-controller",
    "root-ca-certificate-publisher-controller",
)
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
# The first address of the range: the `kubernetes` Service, which the serving cert must name.
KUBERNETES_SERVICE_IP = "10.0.0.1"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
RECORD_NAME = "cluster.json"
ETCD_DATA_PREFIX = "pkcs11-issuer-etcd-"
STOP_GRACE_SECONDS = 15.0
LOG_TAIL_LINES = 40

_PR_SET_PDEATHSIG = 1
# Loaded before any fork: the child may only make the prctl call, not load libraries.
_libc = ctypes.CDLL(None, use_errno=True)


class ControlPlaneError(RuntimeError):
    """The control plane could not be started, reached or stopped."""


class BinariesMissing(ControlPlaneError):
    """The Kubernetes, etcd or helm binaries have not been built yet."""


@dataclass(frozen=True)
class Binaries:
    kube_apiserver: Path
    kube_controller_manager: Path
    kubectl: Path
    etcd: Path
    helm: Path

    @classmethod
    def from_dirs(cls, directories: Sequence[Path]) -> Binaries:
        def find(name: str) -> Path:
            for directory in directories:
                if os.access(directory / name, os.X_OK):
                    return directory / name
            raise BinariesMissing(f"{name} is in none of {', '.join(map(str, directories))}")

        return cls(
            kube_apiserver=find("kube-apiserver"),
            kube_controller_manager=find("kube-controller-manager"),
            kubectl=find("kubectl"),
            etcd=find("etcd"),
            helm=find("helm"),
        )

    @property
    def directories(self) -> list[Path]:
        return list(dict.fromkeys(path.parent for path in self.__dict__.values()))


def find_repo_root() -> Path:
    """The checkout holding scripts/k8s-binaries.sh: above the working directory or this file."""
    for start in (Path.cwd(), Path(__file__).resolve()):
        for directory in (start, *start.parents):
            if (directory / BINARIES_SCRIPT).is_file():
                return directory
    raise BinariesMissing(
        f"no {BINARIES_SCRIPT} above {Path.cwd()}: run this from a pkcs11-issuer checkout"
    )


def locate_binaries(*, build: bool = False, repo_root: Path | None = None) -> Binaries:
    """Ask scripts/k8s-binaries.sh where the binaries are; with `build`, build missing ones.

    The script owns the version pins, so this never guesses a cache path itself. While building,
    its progress goes straight to our stderr.
    """
    root = repo_root or find_repo_root()
    command = [str(root / BINARIES_SCRIPT)] if build else [str(root / BINARIES_SCRIPT), "--check"]
    result = subprocess.run(
        command,
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=None if build else subprocess.PIPE,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        detail = (result.stderr or "").strip() or f"{command[0]} exited {result.returncode}"
        raise BinariesMissing(detail)
    return Binaries.from_dirs([Path(line) for line in result.stdout.split()])


@contextlib.contextmanager
def interrupt_on_termination() -> Iterator[None]:
    """Treat SIGTERM and SIGHUP like Ctrl-C inside the block.

    KeyboardInterrupt is what both pytest and our own `finally` blocks already handle by
    tearing down, whereas the default action of these signals kills Python on the spot and
    leaves the control plane running.
    """

    def interrupt(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def free_ports(count: int) -> list[int]:
    # All sockets stay bound until every port is chosen, so the kernel cannot hand one out twice.
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def remove_stale_etcd_data(directory: Path, *, min_age: float = 60.0) -> list[Path]:
    """Delete data directories in `directory` left by etcds that no longer run.

    A control plane whose Python process was SIGKILLed cannot delete its etcd data, which on
    tmpfs costs memory until reboot. A running etcd holds a flock on its bbolt file, so a
    directory whose file can be locked belongs to no one. Directories younger than `min_age`
    seconds or without that file are left alone: their etcd may be starting right now.
    """
    removed = []
    for data_dir in directory.glob(f"{ETCD_DATA_PREFIX}*"):
        with contextlib.suppress(FileNotFoundError):
            if time.time() - data_dir.stat().st_mtime < min_age:
                continue
        database = data_dir / "member" / "snap" / "db"
        try:
            with database.open("rb") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue
        shutil.rmtree(data_dir, ignore_errors=True)
        removed.append(data_dir)
    return removed


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if the test run is SIGKILLed, the kernel kills
    # each control-plane process too instead of leaving it behind. SIGKILL, because an orderly
    # shutdown is impossible then anyway: all three get the signal at once, and a
    # kube-apiserver whose etcd is gone spends half a minute retrying before it exits.
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def _alive(pid: int, executable: Path) -> bool:
    """Whether `pid` still runs `executable` (a recycled PID running something else does not)."""
    try:
        return Path(os.readlink(f"/proc/{pid}/exe")) == executable.resolve()
    except OSError:
        return False


def _stop_process_group(pid: int, executable: Path, wait: Callable[[float], bool]) -> None:
    """SIGTERM the process group led by `pid`, then SIGKILL what is still there after a grace.

    `wait(timeout)` reports whether the process has gone.
    """
    for sig, grace in ((signal.SIGTERM, STOP_GRACE_SECONDS), (signal.SIGKILL, 5.0)):
        if not _alive(pid, executable):
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)
        if wait(grace):
            return
    raise ControlPlaneError(f"{executable.name} (pid {pid}) survived SIGKILL")


def _poll_gone(pid: int, executable: Path) -> Callable[[float], bool]:
    def wait(timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while _alive(pid, executable):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    return wait


def _write_kubeconfig(path: Path, server: str, ca_pem: bytes, user: dict[str, str]) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "pkcs11-issuer-dev",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_pem).decode(),
                },
            }
        ],
        "users": [{"name": "user", "user": user}],
        "contexts": [
            {
                "name": "pkcs11-issuer-dev",
                "context": {"cluster": "pkcs11-issuer-dev", "user": "user"},
            }
        ],
        "current-context": "pkcs11-issuer-dev",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    # Holds a credential: readable by its owner only, from the moment it exists.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        yaml.safe_dump(config, handle, sort_keys=False)
    return path


@dataclass
class _Process:
    name: str
    pid: int
    executable: Path
    log_path: Path
    popen: subprocess.Popen[bytes]

    def wait(self, timeout: float) -> bool:
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager, with all state under `workdir`.

    `workdir` receives the PKI, the logs and the admin kubeconfig (unless `kubeconfig_path`
    puts it elsewhere); etcd's data goes to tmpfs when /dev/shm exists. `detachable` control
    planes are meant to outlive this process (see `detach()`), so they are not tied to it.
    """

    def __init__(
        self,
        workdir: Path,
        binaries: Binaries | None = None,
        *,
        kubeconfig_path: Path | None = None,
        detachable: bool = False,
        start_timeout: float = 120.0,
    ):
        self.workdir = workdir.resolve()
        self.kubeconfig_path = (kubeconfig_path or self.workdir / "kubeconfig").resolve()
        self._binaries = binaries
        self._detachable = detachable
        self._start_timeout = start_timeout
        self._processes: list[_Process] = []
        self._etcd_data_dir: Path | None = None
        self._port = 0
        self._admin_context: ssl.SSLContext | None = None
        self._pki_dir = self.workdir / "pki"
        self._log_dir = self.workdir / "logs"

    @property
    def binaries(self) -> Binaries:
        if self._binaries is None:
            self._binaries = locate_binaries()
        return self._binaries

    @property
    def server_url(self) -> str:
        if not self._port:
            raise ControlPlaneError("the control plane has not been started")
        return f"https://127.0.0.1:{self._port}"

    @property
    def ca_path(self) -> Path:
        return self._pki_dir / "ca.crt"

    @property
    def pids(self) -> dict[str, int]:
        """Process IDs of what this object runs, by name (etcd, kube-apiserver, ...)."""
        return {process.name: process.pid for process in self._processes}

    @property
    def etcd_data_dir(self) -> Path | None:
        return self._etcd_data_dir

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------------------- lifecycle

    def start(self) -> ControlPlane:
        if self._processes:
            raise ControlPlaneError("already started")
        binaries = self.binaries
        self.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._log_dir.mkdir(exist_ok=True)
        if not self._detachable:
            atexit.register(self.stop)
        try:
            self._start(binaries)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, binaries: Binaries) -> None:
        shutil.rmtree(self._pki_dir, ignore_errors=True)
        ca = pki.CertificateAuthority(self._pki_dir)
        # etcd's gRPC gateway dials etcd itself with this certificate, hence client too.
        etcd_server = ca.issue(
            "etcd", "etcd", hosts=["127.0.0.1", "localhost"], server=True, client=True
        )
        etcd_client = ca.issue("apiserver-etcd-client", "kube-apiserver", client=True)
        serving = ca.issue(
            "apiserver",
            "kube-apiserver",
            server=True,
            hosts=[
                "127.0.0.1",
                "localhost",
                KUBERNETES_SERVICE_IP,
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
        )
        admin = ca.issue("admin", "admin", organizations=["system:masters"], client=True)
        controller_manager = ca.issue(
            "kube-controller-manager", "system:kube-controller-manager", client=True
        )
        sa_key, sa_pub = pki.write_signing_key(self._pki_dir, "service-account")

        etcd_port, peer_port, self._port = free_ports(3)
        # tmpfs where there is one: the tests' writes never wait for a disk.
        shm = Path("/dev/shm")  # noqa: S108
        data_parent = shm if os.access(shm, os.W_OK) else self.workdir
        remove_stale_etcd_data(data_parent)
        self._etcd_data_dir = Path(tempfile.mkdtemp(prefix=ETCD_DATA_PREFIX, dir=data_parent))
        etcd_url = f"https://127.0.0.1:{etcd_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        etcd = self._spawn(
            "etcd",
            binaries.etcd,
            "--name=default",
            f"--data-dir={self._etcd_data_dir}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            # The peer port serves no one (single member) but must not collide with another
            # etcd on the default 2380.
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=default={peer_url}",
            f"--cert-file={etcd_server.cert_path}",
            f"--key-file={etcd_server.key_path}",
            f"--trusted-ca-file={ca.cert_path}",
            "--client-cert-auth",
            # tmpfs loses everything on reboot anyway; fsync would only slow the tests.
            "--unsafe-no-fsync",
            "--log-level=warn",
        )
        etcd_context = self._ssl_context(etcd_client)
        self._wait_until(
            etcd,
            "etcd answers /health",
            lambda: self._get(etcd_port, "/health", etcd_context) == 200,
        )

        apiserver = self._spawn(
            "kube-apiserver",
            binaries.kube_apiserver,
            f"--etcd-servers={etcd_url}",
            f"--etcd-cafile={ca.cert_path}",
            f"--etcd-certfile={etcd_client.cert_path}",
            f"--etcd-keyfile={etcd_client.key_path}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self._port}",
            f"--cert-dir={self._pki_dir}",
            f"--tls-cert-file={serving.cert_path}",
            f"--tls-private-key-file={serving.key_path}",
            f"--client-ca-file={ca.cert_path}",
            "--authorization-mode=Node,RBAC",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={sa_pub}",
            f"--service-account-signing-key-file={sa_key}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            # The `kubernetes` Service's endpoint would be 127.0.0.1, which Endpoints validation
            # refuses (loopback), every few seconds, in the log. No Pod could use it anyway.
            "--endpoint-reconciler-type=none",
            "--profiling=false",
        )
        admin_context = self._ssl_context(admin)
        self._wait_until(
            apiserver,
            "kube-apiserver answers /readyz",
            lambda: self._get(self._port, "/readyz", admin_context) == 200,
        )
        self._admin_context = admin_context

        _write_kubeconfig(
            self.kubeconfig_path,
            self.server_url,
            ca.pair.cert_pem(),
            {
                "client-certificate-data": base64.b64encode(admin.cert_pem()).decode(),
                "client-key-data": base64.b64encode(admin.key_pem()).decode(),
            },
        )
        controller_manager_kubeconfig = _write_kubeconfig(
            self.workdir / "kube-controller-manager.kubeconfig",
            self.server_url,
            ca.pair.cert_pem(),
            {
                "client-certificate": str(controller_manager.cert_path),
                "client-key": str(controller_manager.key_path),
            },
        )
        manager = self._spawn(
            "kube-controller-manager",
            binaries.kube_controller_manager,
            f"--kubeconfig={controller_manager_kubeconfig}",
            f"--controllers={','.join(CONTROLLERS)}",
            # Each controller acts as its own ServiceAccount, so RBAC applies to them as it
            # does in a real cluster.
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={sa_key}",
            f"--root-ca-file={ca.cert_path}",
            "--leader-elect=false",
            # No HTTPS endpoint: nothing scrapes it, and a fixed port would collide when two
            # control planes run side by side.
            "--secure-port=0",
        )
        # The ServiceAccount controller creating `default` proves the manager is up, talking
        # to the API server, and allowed to write.
        self._wait_until(
            manager,
            "kube-controller-manager creates the default ServiceAccount",
            lambda: (
                self.request("GET", "/api/v1/namespaces/default/serviceaccounts/default")[0] == 200
            ),
        )

    def stop(self) -> None:
        """Stop every process (newest first) and delete etcd's data. Safe to call again."""
        atexit.unregister(self.stop)
        errors = []
        while self._processes:
            process = self._processes.pop()
            try:
                _stop_process_group(process.pid, process.executable, process.wait)
            except ControlPlaneError as error:
                errors.append(str(error))
        if self._etcd_data_dir is not None:
            shutil.rmtree(self._etcd_data_dir, ignore_errors=True)
            self._etcd_data_dir = None
        if errors:
            raise ControlPlaneError("; ".join(errors))

    def detach(self) -> Path:
        """Hand the running processes over to a record file and forget them.

        `RecordedControlPlane.load(workdir).stop()` stops them later, from any process.
        """
        if not self._detachable:
            raise ControlPlaneError("only a control plane created with detachable=True can detach")
        record = RecordedControlPlane(
            workdir=self.workdir,
            server_url=self.server_url,
            kubeconfig_path=self.kubeconfig_path,
            etcd_data_dir=self._etcd_data_dir,
            processes=[(p.name, p.pid, p.executable) for p in self._processes],
        )
        path = record.save()
        self._processes = []
        self._etcd_data_dir = None
        return path

    def exited(self) -> str | None:
        """The name of a process that has exited, if any has."""
        for process in self._processes:
            if process.popen.poll() is not None:
                return process.name
        return None

    def log_tail(self, name: str) -> str:
        return _tail(self._log_dir / f"{name}.log")

    def _spawn(self, name: str, executable: Path, *args: str) -> _Process:
        log_path = self._log_dir / f"{name}.log"
        with log_path.open("wb") as log:
            popen = subprocess.Popen(
                [str(executable), *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own process group: Ctrl-C in the terminal reaches only us, so we stop
                # the processes in order instead of them dying at random, and a detached
                # control plane has no controlling terminal to lose.
                start_new_session=True,
                preexec_fn=None if self._detachable else _die_with_parent,  # noqa: PLW1509
            )
        process = _Process(name, popen.pid, executable, log_path, popen)
        self._processes.append(process)
        return process

    def _wait_until(self, process: _Process, what: str, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self._start_timeout
        while True:
            if process.popen.poll() is not None:
                raise ControlPlaneError(
                    f"{process.name} exited with {process.popen.returncode} before {what};"
                    f" last lines of {process.log_path}:\n{_tail(process.log_path)}"
                )
            with contextlib.suppress(OSError, http.client.HTTPException):
                if ready():
                    return
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"timed out after {self._start_timeout:.0f}s waiting until {what};"
                    f" last lines of {process.log_path}:\n{_tail(process.log_path)}"
                )
            time.sleep(0.2)

    # ----------------------------------------------------------------------- API access

    def _ssl_context(self, client: pki.KeyPair) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_path))
        context.load_cert_chain(str(client.cert_path), str(client.key_path))
        return context

    @staticmethod
    def _get(port: int, path: str, context: ssl.SSLContext) -> int:
        connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
        try:
            connection.request("GET", path)
            return connection.getresponse().status
        finally:
            connection.close()

    def _connection(self, timeout: float) -> http.client.HTTPSConnection:
        if self._admin_context is None:
            raise ControlPlaneError("the control plane has not been started")
        return http.client.HTTPSConnection(
            "127.0.0.1", self._port, context=self._admin_context, timeout=timeout
        )

    def request(
        self, method: str, path: str, body: Any = None, *, timeout: float = 30.0
    ) -> tuple[int, Any]:
        """One API call as cluster admin: (HTTP status, decoded JSON body or None)."""
        connection = self._connection(timeout)
        try:
            payload = None if body is None else json.dumps(body).encode()
            headers = {"Accept": "application/json"}
            if payload is not None:
                headers["Content-Type"] = (
                    "application/merge-patch+json" if method == "PATCH" else "application/json"
                )
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            data = response.read()
            return response.status, json.loads(data) if data else None
        finally:
            connection.close()

    def watch(self, path: str, *, timeout: float = 30.0) -> Generator[dict[str, Any], None, None]:
        """Watch events ({"type": ..., "object": ...}) for a collection `path`, as admin.

        The watch is established before this returns, so nothing done afterwards is missed;
        reading blocks for at most `timeout` seconds per event. Close the generator to end it.
        """
        separator = "&" if "?" in path else "?"
        deadline = time.monotonic() + timeout
        while True:
            connection = self._connection(timeout)
            connection.request(
                "GET", f"{path}{separator}watch=1", headers={"Accept": "application/json"}
            )
            response = connection.getresponse()
            if response.status == 200:
                break
            body = response.read().decode(errors="replace")
            connection.close()
            # 429 is the API server asking for patience, e.g. while the watch cache of a
            # just-created CRD fills; every Kubernetes client waits Retry-After and tries again.
            retry_after = float(response.getheader("Retry-After") or 1)
            if response.status != 429 or time.monotonic() + retry_after > deadline:
                raise ControlPlaneError(f"watch {path}: HTTP {response.status}: {body}")
            time.sleep(retry_after)

        def events() -> Generator[dict[str, Any], None, None]:
            try:
                while line := response.readline():
                    event: dict[str, Any] = json.loads(line)
                    yield event
            finally:
                connection.close()

        return events()

    def environment(self, kubeconfig: Path | None = None) -> dict[str, str]:
        """os.environ with KUBECONFIG set and the built kubectl and helm first on PATH."""
        path = os.pathsep.join([*map(str, self.binaries.directories), os.environ.get("PATH", "")])
        return {**os.environ, "KUBECONFIG": str(kubeconfig or self.kubeconfig_path), "PATH": path}

    def kubectl(
        self,
        *args: str,
        kubeconfig: Path | None = None,
        input: str | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run the built kubectl (as admin unless `kubeconfig` says otherwise)."""
        command = [
            str(self.binaries.kubectl),
            f"--kubeconfig={kubeconfig or self.kubeconfig_path}",
            *args,
        ]
        result = subprocess.run(command, input=input, capture_output=True, text=True, check=False)
        if check and result.returncode != 0:
            raise ControlPlaneError(
                f"kubectl {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}"
            )
        return result

    def service_account_kubeconfig(
        self, namespace: str, name: str, path: Path, *, duration: str = "1h"
    ) -> Path:
        """Write a kubeconfig that authenticates as ServiceAccount `namespace/name`.

        The token comes from the TokenRequest API, exactly what a Pod's projected token is, so
        RBAC decisions match what the operator gets in a cluster.
        """
        token = self.kubectl(
            "create", "token", name, f"--namespace={namespace}", f"--duration={duration}"
        ).stdout.strip()
        return _write_kubeconfig(path, self.server_url, self.ca_path.read_bytes(), {"token": token})


@dataclass
class RecordedControlPlane:
    """A detached control plane, as written to `<workdir>/cluster.json` by `detach()`."""

    workdir: Path
    server_url: str
    kubeconfig_path: Path
    etcd_data_dir: Path | None
    processes: list[tuple[str, int, Path]]

    @classmethod
    def load(cls, workdir: Path) -> RecordedControlPlane | None:
        try:
            data = json.loads((workdir / RECORD_NAME).read_text())
        except FileNotFoundError:
            return None
        return cls(
            workdir=workdir.resolve(),
            server_url=data["server_url"],
            kubeconfig_path=Path(data["kubeconfig_path"]),
            etcd_data_dir=Path(data["etcd_data_dir"]) if data["etcd_data_dir"] else None,
            processes=[(p["name"], p["pid"], Path(p["executable"])) for p in data["processes"]],
        )

    def save(self) -> Path:
        path = self.workdir / RECORD_NAME
        path.write_text(
            json.dumps(
                {
                    "server_url": self.server_url,
                    "kubeconfig_path": str(self.kubeconfig_path),
                    "etcd_data_dir": str(self.etcd_data_dir) if self.etcd_data_dir else None,
                    "processes": [
                        {"name": name, "pid": pid, "executable": str(executable)}
                        for name, pid, executable in self.processes
                    ],
                },
                indent=2,
            )
            + "\n"
        )
        return path

    def running(self) -> list[str]:
        return [name for name, pid, executable in self.processes if _alive(pid, executable)]

    def stop(self) -> list[str]:
        """Stop what still runs (newest first), delete etcd's data and the record.

        Returns the names of the processes that were running.
        """
        stopped = self.running()
        for _name, pid, executable in reversed(self.processes):
            _stop_process_group(pid, executable, _poll_gone(pid, executable))
        if self.etcd_data_dir is not None:
            shutil.rmtree(self.etcd_data_dir, ignore_errors=True)
        (self.workdir / RECORD_NAME).unlink(missing_ok=True)
        return stopped
