"""`make run`'s embedded default, as a newcomer starts it: `pkcs11-issuer dev run`.

It checks the SoftHSM token, starts the control plane and the operator, applies
examples/softhsm/quickstart.yaml in namespace `demo`, waits until its Certificates are Ready
and stays up until Ctrl-C; a second run on the same directory reuses the token and its PIN."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import IO

import yaml
from prometheus_client.parser import text_string_to_metric_families

from pkcs11_issuer.dev.controlplane import Binaries

QUICKSTART_TIMEOUT = 180.0  # control plane, CRDs, operator, two issuances on a loaded machine
STOP_TIMEOUT = 60.0
KEY_REFERENCE = "pkcs11-issuer.io/key-reference"


class DevRun:
    """One `pkcs11-issuer dev run` in its own session, its output collected as it comes."""

    def __init__(self, dev_dir: Path) -> None:
        self.dev_dir = dev_dir
        command = [str(Path(sys.executable).parent / "pkcs11-issuer"), "dev", "run"]
        env = {k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF"}  # it brings its own
        self.process = subprocess.Popen(
            [*command, "--dev-dir", str(dev_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,
        )
        self._stdout: list[str] = []
        self._stderr: list[str] = []
        assert self.process.stdout is not None and self.process.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(stream, lines), daemon=True)
            for stream, lines in (
                (self.process.stdout, self._stdout),
                (self.process.stderr, self._stderr),
            )
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: IO[str], lines: list[str]) -> None:
        for line in iter(stream.readline, ""):
            lines.append(line)

    @property
    def stdout(self) -> str:
        return "".join(self._stdout)

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    def operator_log(self) -> str:
        try:
            return (self.dev_dir / "operator.log").read_text(errors="replace")
        except OSError:
            return "(no operator log)"

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.stderr:
            if self.process.poll() is not None or time.monotonic() > deadline:
                state = (
                    f"exited with {self.process.returncode}"
                    if self.process.poll() is not None
                    else f"still running after {timeout:.0f}s"
                )
                raise AssertionError(
                    f"`dev run` {state} without saying {text!r}\n--- stderr:\n{self.stderr}"
                    f"\n--- stdout:\n{self.stdout}\n--- operator log (end):\n"
                    + "\n".join(self.operator_log().splitlines()[-40:])
                )
            time.sleep(0.2)

    def stop(self) -> int:
        """Ctrl-C as a terminal sends it: SIGTERM to the whole process group."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            code = self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            raise
        finally:
            for reader in self._readers:
                reader.join(10)
        return code


def _processes_mentioning(path: Path) -> dict[int, str]:
    result = subprocess.run(
        ["pgrep", "-a", "-f", str(path)], capture_output=True, text=True, check=False
    )
    found = {}
    for line in result.stdout.splitlines():
        pid, _, command = line.partition(" ")
        found[int(pid)] = command
    return found


def _kill_leftovers(path: Path) -> None:
    """After a failed test only: what this test started and `dev run` did not stop."""
    for pid in _processes_mentioning(path):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """Running (a zombie, already dead but not yet reaped, does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _kubectl(binaries: Binaries, kubeconfig: Path, *args: str) -> str:
    result = subprocess.run(
        [str(binaries.kubectl), "--kubeconfig", str(kubeconfig), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
    return result.stdout


def _ready_status(certificate: dict[str, object]) -> str | None:
    status = certificate.get("status") or {}
    assert isinstance(status, dict)
    for condition in status.get("conditions") or ():
        if condition.get("type") == "Ready":
            return str(condition.get("status"))
    return None


def _metric_samples(port: int) -> dict[tuple[str, str, str], float]:
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as answer:
        text = answer.read().decode()
    assert "pkcs11_issuer_certificate_ready_status" in text, text
    return {
        (s.labels["namespace"], s.labels["name"], s.labels["condition"]): s.value
        for family in text_string_to_metric_families(text)
        if family.name == "pkcs11_issuer_certificate_ready_status"
        for s in family.samples
    }


def _check_running(run: DevRun, binaries: Binaries) -> int:
    """What a newcomer sees once `dev run` says the quick-start is applied; returns the
    operator's process ID."""
    dev_dir = run.dev_dir
    kubeconfig = dev_dir / "kubeconfig"
    # The listing `dev run` prints: both Certificates, Ready.
    listing = run.stderr.split("quick-start applied:", 1)[1].split("try, in another shell", 1)[0]
    rows = {line.split()[0]: line.split() for line in listing.splitlines() if line.strip()}
    assert {"NAME", "root-ca", "web"} <= rows.keys(), listing
    assert rows["root-ca"][1] == rows["web"][1] == "True", listing

    certificates = json.loads(
        _kubectl(
            binaries, kubeconfig, "get", "certificates.pkcs11-issuer.io", "-n", "demo", "-o", "json"
        )
    )["items"]
    ready = {c["metadata"]["name"]: _ready_status(c) for c in certificates}
    assert ready == {"root-ca": "True", "web": "True"}

    secret = json.loads(
        _kubectl(binaries, kubeconfig, "get", "secret", "web-tls", "-n", "demo", "-o", "json")
    )
    assert secret["type"] == KEY_REFERENCE
    assert {"tls.crt", "ca.crt", "tls.pkcs11-uri"} <= secret["data"].keys()
    assert "tls.key" not in secret["data"]

    config = yaml.safe_load((dev_dir / "config.yaml").read_text())
    assert config["modules"]["softhsm"].startswith("/")
    samples = _metric_samples(int(config["metrics"]["port"]))
    assert samples[("demo", "web", "True")] == 1.0
    assert samples[("demo", "root-ca", "True")] == 1.0

    operators = [
        pid
        for pid, command in _processes_mentioning(dev_dir).items()
        if f"--config={dev_dir / 'config.yaml'}" in command and " run " in f"{command} "
    ]
    assert len(operators) == 1, _processes_mentioning(dev_dir)
    return operators[0]


def _check_stopped(run: DevRun, code: int, operator_pid: int) -> None:
    stdout, stderr = run.stdout, run.stderr
    assert code == 0, stderr
    assert "login      ok" in stdout and "\nresult     OK\n" in stdout, stdout
    assert f"export KUBECONFIG={run.dev_dir / 'kubeconfig'}" in stdout
    pin = (run.dev_dir / "pin").read_text().strip()
    assert len(pin) >= 8
    assert pin not in stdout + stderr
    assert pin not in run.operator_log()
    assert not _alive(operator_pid), f"the operator (pid {operator_pid}) outlived `dev run`"
    assert _processes_mentioning(run.dev_dir) == {}


def test_dev_run_applies_the_quick_start_and_stops_cleanly_twice(
    cluster_binaries: Binaries, softhsm: object, tmp_path: Path
) -> None:
    dev_dir = tmp_path / "dev"
    tokens = []
    for attempt in ("first", "second"):
        run = DevRun(dev_dir)
        try:
            run.wait_for("quick-start applied:", QUICKSTART_TIMEOUT)
            run.wait_for("try, in another shell", 10)
            operator_pid = _check_running(run, cluster_binaries)
        except BaseException as error:
            error.add_note(f"in the {attempt} `dev run` on {dev_dir}")
            try:
                run.stop()
            finally:
                _kill_leftovers(dev_dir)
            raise
        code = run.stop()
        try:
            _check_stopped(run, code, operator_pid)
        except AssertionError as error:
            error.add_note(f"after the {attempt} `dev run` on {dev_dir}")
            _kill_leftovers(dev_dir)
            raise
        serial = re.search(r"^token +'dev-issuer' .*, serial (\w+)$", run.stdout, re.MULTILINE)
        assert serial is not None, run.stdout
        tokens.append((serial[1], (dev_dir / "pin").read_text()))
    # The second run reused the first one's token (same serial) and its PIN (it logged in).
    assert tokens[0] == tokens[1]
