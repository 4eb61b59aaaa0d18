"""Starting and stopping leaves nothing behind: after stop, failure, `down`, or a killed parent."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pkcs11_issuer.dev.controlplane import (
    Binaries,
    ControlPlane,
    ControlPlaneError,
    remove_stale_etcd_data,
)

PROCESS_NAMES = ("etcd", "kube-apiserver", "kube-controller-manager")


def alive(pid: int) -> bool:
    """Whether any thread of `pid` still runs; a zombie waiting to be reaped does not count.

    Every thread counts, not only the leader: a SIGKILLed Go program's main thread can be a
    zombie while its other threads are still exiting and still hold its files (and flocks).
    """
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:
        return False
    for task in tasks:
        try:
            state = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            continue
        if state != "Z":
            return True
    return False


def wait_gone(pids: list[int], timeout: float = 30.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := [pid for pid in pids if alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def processes_mentioning(text: str) -> dict[str, list[str]]:
    """Command lines of running processes that mention `text`, by executable name.

    Every control-plane process names a file in its workdir on its command line, which tells
    its processes apart from the session's control plane and from anyone else's.
    """
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or not alive(int(entry.name)):
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode().split("\0")
            name = Path(os.readlink(entry / "exe")).name
        except OSError:
            continue
        if any(text in arg for arg in argv) and name in PROCESS_NAMES:
            found[name] = [entry.name, *argv]
    return found


def test_stop_ends_every_process_and_deletes_etcd_data(
    cluster_binaries: Binaries, tmp_path: Path
) -> None:
    with ControlPlane(tmp_path / "cp", cluster_binaries) as plane:
        pids = plane.pids
        data_dir = plane.etcd_data_dir
        assert list(pids) == list(PROCESS_NAMES)
        assert set(processes_mentioning(str(tmp_path))) == set(PROCESS_NAMES)
        assert data_dir is not None
        assert data_dir.is_dir()
    assert wait_gone(list(pids.values()), timeout=0) == []
    assert processes_mentioning(str(tmp_path)) == {}
    assert not data_dir.exists()
    assert plane.pids == {}


def test_a_failed_start_stops_what_it_had_started(
    cluster_binaries: Binaries, tmp_path: Path
) -> None:
    broken = dataclasses.replace(cluster_binaries, kube_apiserver=Path("/bin/false"))
    plane = ControlPlane(tmp_path / "cp", broken)

    with pytest.raises(ControlPlaneError, match="kube-apiserver exited with 1"):
        plane.start()

    # kube-apiserver is only launched once etcd answers, so etcd really was running.
    assert (tmp_path / "cp" / "logs" / "kube-apiserver.log").exists()
    assert processes_mentioning(str(tmp_path)) == {}
    assert plane.etcd_data_dir is None


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pkcs11_issuer.cli.main", "dev", "cluster", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=180,
    )


def test_cli_up_status_down(cluster_binaries: Binaries, tmp_path: Path) -> None:
    where = ("--workdir", str(tmp_path / "cluster"), "--kubeconfig", str(tmp_path / "kubeconfig"))

    up = run_cli("up", "--no-build", *where)
    assert up.returncode == 0, up.stderr
    assert up.stdout == f"export KUBECONFIG={tmp_path / 'kubeconfig'}\n"
    record = json.loads((tmp_path / "cluster" / "cluster.json").read_text())
    pids = [process["pid"] for process in record["processes"]]
    try:
        assert [process["name"] for process in record["processes"]] == list(PROCESS_NAMES)
        # `up` has exited; the control plane outlives it.
        assert all(alive(pid) for pid in pids)
        version = subprocess.run(
            [str(cluster_binaries.kubectl), f"--kubeconfig={tmp_path / 'kubeconfig'}",
             "version", "-o", "json"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert json.loads(version.stdout)["serverVersion"]["gitVersion"].startswith("v1.33.")

        again = run_cli("up", "--no-build", *where)
        assert again.returncode == 0
        assert "already running" in again.stderr

        status = run_cli("status", *where)
        assert status.returncode == 0
        assert status.stdout.count(" running") == len(PROCESS_NAMES)
    finally:
        down = run_cli("down", *where)
    assert down.returncode == 0, down.stderr
    assert wait_gone(pids) == []
    assert not Path(record["etcd_data_dir"]).exists()
    assert run_cli("status", *where).returncode == 3


def test_processes_die_with_a_killed_parent(cluster_binaries: Binaries, tmp_path: Path) -> None:
    # A parent that cannot clean up (SIGKILL, OOM killer): the kernel's parent-death signal
    # must still stop its control plane.
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from pkcs11_issuer.dev.controlplane import ControlPlane, locate_binaries
        plane = ControlPlane(Path({str(tmp_path / "cp")!r}), locate_binaries()).start()
        print("ready", flush=True)
        time.sleep(600)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        assert parent.stdout.readline().strip() == "ready"
        running = processes_mentioning(str(tmp_path))
        assert set(running) == set(PROCESS_NAMES)
    finally:
        parent.kill()
        parent.wait()

    assert wait_gone([int(argv[0]) for argv in running.values()]) == []
    # Nobody was left to delete etcd's data; the next start sweeps it.
    (data_dir,) = [arg.split("=", 1)[1] for arg in running["etcd"] if arg.startswith("--data-dir=")]
    assert Path(data_dir).is_dir()
    assert Path(data_dir) in remove_stale_etcd_data(Path(data_dir).parent, min_age=0)
    assert not Path(data_dir).exists()
