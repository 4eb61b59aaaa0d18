"""podman for the container tier: the project's images (scripts/build-image.sh) and a Pod of
containers that is always removed, whatever happened.

podman is pointed at scripts/podman/containers.conf (runc, ulimits the CI sandbox permits; the
file says why) unless CONTAINERS_CONF is set already, exactly as the scripts do.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pkcs11_issuer.dev.controlplane import find_repo_root

BUILD_SCRIPT = Path("scripts/build-image.sh")
CONTAINERS_CONF = Path("scripts/podman/containers.conf")
BUILD_TIMEOUT = 30 * 60.0
LOG_TAIL_LINES = 60
OWNER_LABEL = "pkcs11-issuer-test-pid"


class PodmanError(RuntimeError):
    pass


class Podman:
    def __init__(self, executable: str, repo_root: Path | None = None) -> None:
        self.executable = executable
        self.repo_root = repo_root or find_repo_root()
        self.env = {
            **os.environ,
            "CONTAINERS_CONF": os.environ.get(
                "CONTAINERS_CONF", str(self.repo_root / CONTAINERS_CONF)
            ),
        }

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.executable, *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise PodmanError(
                f"podman {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}"
            )
        return result

    def build_images(self) -> subprocess.CompletedProcess[str]:
        """scripts/build-image.sh (cached layers make a second run take seconds); its stdout
        names the operator image, then the sidecar image."""
        return subprocess.run(
            [str(self.repo_root / BUILD_SCRIPT)],
            cwd=self.repo_root,
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
            timeout=BUILD_TIMEOUT,
        )


def remove_abandoned_pods(podman: Podman) -> list[str]:
    """Remove the pods of test runs that were killed before they could remove them (each pod
    records the test process in a label); returns their names."""
    listing = podman("pod", "ls", "--format=json", f"--filter=label={OWNER_LABEL}", check=False)
    removed = []
    for pod in json.loads(listing.stdout or "[]") or []:
        owner = (pod.get("Labels") or {}).get(OWNER_LABEL, "")
        if owner.isdigit() and Path(f"/proc/{owner}").exists():
            continue
        podman("pod", "rm", "--force", "--time=2", "--ignore", pod["Name"], check=False)
        removed.append(pod["Name"])
    return removed


@dataclass(frozen=True)
class Images:
    operator: str
    sidecar: str


class Pod:
    """A podman pod on the host network (so containers reach the local API server on
    127.0.0.1), its containers named `<pod>-<name>`. Leaving the `with` block removes the pod
    and every container in it."""

    def __init__(self, podman: Podman, name: str) -> None:
        self.podman = podman
        self.name = name
        self.containers: list[str] = []

    def __enter__(self) -> Pod:
        self.podman(
            "pod",
            "create",
            "--network=host",
            f"--name={self.name}",
            f"--label={OWNER_LABEL}={os.getpid()}",
        )
        return self

    def __exit__(self, *_exc: object) -> None:
        self.remove()

    def remove(self) -> None:
        self.podman("pod", "rm", "--force", "--time=5", "--ignore", self.name, check=False)

    def run(
        self,
        name: str,
        image: str,
        *,
        volumes: Sequence[tuple[Path, str, str]] = (),
        env: dict[str, str] | None = None,
        options: Sequence[str] = (),
        args: Sequence[str] = (),
    ) -> str:
        """Start a container in the pod (detached); volumes are (host path, container path,
        options such as "ro"). Returns the container's name."""
        container = f"{self.name}-{name}"
        command = ["run", "--detach", f"--pod={self.name}", f"--name={container}"]
        for host, path, mount_options in volumes:
            command.append(
                f"--volume={host}:{path}" + (f":{mount_options}" if mount_options else "")
            )
        for key, value in (env or {}).items():
            command.append(f"--env={key}={value}")
        self.containers.append(container)
        self.podman(*command, *options, image, *args)
        return container

    def running(self, container: str) -> bool:
        result = self.podman("inspect", "--format={{.State.Running}}", container, check=False)
        return result.stdout.strip() == "true"

    def exec(self, container: str, *args: str) -> str:
        return self.podman("exec", container, *args).stdout

    def logs(self) -> str:
        """The end of every container's log and state, for assertion messages."""
        parts = []
        for container in self.containers:
            state = self.podman(
                "inspect",
                "--format={{.State.Status}} (exit code {{.State.ExitCode}})",
                container,
                check=False,
            ).stdout.strip()
            log = self.podman("logs", f"--tail={LOG_TAIL_LINES}", container, check=False)
            parts.append(
                f"--- container {container}: {state or 'gone'}\n"
                f"{(log.stdout + log.stderr).strip() or '(empty log)'}"
            )
        return "\n".join(parts)

    def wait_for(self, what: str, probe: Callable[[], object], timeout: float = 60.0) -> None:
        """Wait until `probe()` is true; fail with the containers' logs when a container has
        stopped or the time is up."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError):
                if probe():
                    return
            stopped = [c for c in self.containers if not self.running(c)]
            if stopped or time.monotonic() > deadline:
                reason = f"{', '.join(stopped)} stopped" if stopped else f"{timeout:.0f}s passed"
                raise AssertionError(f"{reason} while waiting for {what}\n{self.logs()}")
            time.sleep(0.5)
