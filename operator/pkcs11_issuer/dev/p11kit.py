"""`p11-kit server`: one PKCS#11 module exposed over a unix socket, as the chart's sidecar does.

The operator side loads `p11-kit-client.so` with P11_KIT_SERVER_ADDRESS pointing at the socket;
nothing else changes, which is how the same tests cover the sidecar path.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

CLIENT_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so",
    "/usr/lib/aarch64-linux-gnu/pkcs11/p11-kit-client.so",
    "/usr/lib/pkcs11/p11-kit-client.so",
)


def p11kit_client_module() -> str | None:
    return next((path for path in CLIENT_CANDIDATES if os.path.isfile(path)), None)


def server_address(socket_path: Path) -> str:
    return f"unix:path={socket_path}"


class P11KitServer:
    """Runs `p11-kit server` in the foreground as a child; `stop()` (or the context manager)
    ends it. `restart()` exists so that tests can take the "HSM" away and bring it back."""

    def __init__(
        self, module_path: str, token_uri: str, socket_path: Path, env: dict[str, str]
    ) -> None:
        self.module_path = module_path
        self.token_uri = token_uri
        self.socket_path = socket_path
        self.env = env
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return server_address(self.socket_path)

    def start(self, timeout: float = 10.0) -> P11KitServer:
        binary = shutil.which("p11-kit")
        if binary is None:
            raise FileNotFoundError("p11-kit not found: install the p11-kit package")
        self.socket_path.unlink(missing_ok=True)
        self._process = subprocess.Popen(
            [
                binary,
                "server",
                "--foreground",
                "--provider",
                self.module_path,
                "--name",
                str(self.socket_path),
                self.token_uri,
            ],
            env={**os.environ, **self.env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            # The server forks a child per client connection; a process group of its own lets
            # stop() end those too, so that "the HSM went away" is real for connected clients.
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not self.socket_path.exists():
            if self._process.poll() is not None:
                stderr = self._process.stderr.read().decode() if self._process.stderr else ""
                raise RuntimeError(f"p11-kit server exited: {stderr.strip()}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"p11-kit server did not create {self.socket_path}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        if process.stderr:
            process.stderr.close()
        self.socket_path.unlink(missing_ok=True)

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> P11KitServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
