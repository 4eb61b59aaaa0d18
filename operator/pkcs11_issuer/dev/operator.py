"""The operator as a process next to the local control plane: what `make run` starts and what
the cluster tests start, stop and SIGKILL.

`install_crds` applies `crds/`; `OperatorProcess` runs `pkcs11-issuer run` with a kubeconfig
and the HSM's environment, logging to a file, and waits for its readiness endpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from pkcs11_issuer.dev.controlplane import ControlPlane, find_repo_root

STARTUP_TIMEOUT = 60.0


def install_crds(plane: ControlPlane, crds: Path | None = None) -> None:
    """Apply the CRDs (idempotent) and wait until the API server serves them."""
    directory = crds or find_repo_root() / "crds"
    plane.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(directory))
    plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(directory))


class OperatorError(RuntimeError):
    pass


class OperatorProcess:
    def __init__(
        self,
        config_path: Path,
        *,
        kubeconfig: Path,
        env: dict[str, str],
        log_path: Path,
        health_port: int,
        metrics_port: int,
    ) -> None:
        self.config_path = config_path
        self.kubeconfig = kubeconfig
        self.env = env
        self.log_path = log_path
        self.health_port = health_port
        self.metrics_port = metrics_port
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> OperatorProcess:
        if self._process is not None and self._process.poll() is None:
            raise OperatorError("the operator is already running")
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "pkcs11_issuer.cli.main",
                    "run",
                    f"--config={self.config_path}",
                    "--log-format=text",
                ],
                env={**os.environ, **self.env, "KUBECONFIG": str(self.kubeconfig)},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.health_port}/readyz"
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise OperatorError(
                    f"the operator exited with {self._process.returncode}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise OperatorError(f"the operator was not ready within {timeout:.0f}s:\n{self.log_tail()}")

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as answer:
            text: str = answer.read().decode()
            return text

    def exited(self) -> str | None:
        """ "operator" once the process has ended (the control plane's `exited` convention)."""
        if self._process is not None and self._process.poll() is not None:
            return "operator"
        return None

    def kill(self) -> None:
        """SIGKILL: no cleanup handler runs, as when a node dies."""
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()

    def stop(self, timeout: float = 20.0) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        os.killpg(self._process.pid, signal.SIGTERM)
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def wait(self) -> int:
        assert self._process is not None
        return self._process.wait()

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> OperatorProcess:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
