"""`make run`'s embedded default, as a newcomer starts it: `pkcs11-issuer dev run`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pkcs11_issuer.dev.controlplane import Binaries


def test_dev_run_checks_the_token_serves_a_cluster_and_stops_cleanly(
    cluster_binaries: Binaries, softhsm: object, tmp_path: Path
) -> None:
    command = [str(Path(sys.executable).parent / "pkcs11-issuer"), "dev", "run"]
    env = {k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF"}  # it brings its own
    process = subprocess.Popen(
        [*command, "--dev-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    assert process.stdout is not None and process.stderr is not None
    try:
        deadline = time.monotonic() + 120
        kubeconfig = tmp_path / "kubeconfig"
        seen = ""
        while "control plane ready" not in seen:
            assert time.monotonic() < deadline and process.poll() is None, seen
            seen += process.stderr.readline()
        result = subprocess.run(
            [
                str(cluster_binaries.kubectl),
                "--kubeconfig",
                str(kubeconfig),
                "get",
                "ns",
                "default",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "config.yaml").read_text().startswith("modules:\n  softhsm: /")
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
    assert "login      ok" in stdout and "\nresult     OK\n" in stdout
    assert f"export KUBECONFIG={tmp_path / 'kubeconfig'}" in stdout
    assert process.returncode == 0, stderr
    pin = (tmp_path / "pin").read_text().strip()
    assert pin not in stdout + seen + stderr
    leftovers = subprocess.run(
        ["pgrep", "-f", str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert leftovers.stdout == ""
