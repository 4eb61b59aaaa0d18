"""A throw-away SoftHSM2 token directory: a config file, a token directory, initialised tokens.

SoftHSM reads SOFTHSM2_CONF once, when the module is initialised, so a process that loads it
must have the variable set before the first load; `SoftHsm.env()` gives what to export.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)
DEV_SO_PIN = "so-pin-not-secret"


def softhsm_module() -> str | None:
    """The SoftHSM2 module on this machine, if the package is installed."""
    return next((path for path in MODULE_CANDIDATES if os.path.isfile(path)), None)


@dataclass(frozen=True)
class SoftHsm:
    root: Path

    @property
    def conf_path(self) -> Path:
        return self.root / "softhsm2.conf"

    @property
    def token_dir(self) -> Path:
        return self.root / "tokens"

    def env(self) -> dict[str, str]:
        return {"SOFTHSM2_CONF": str(self.conf_path)}

    @classmethod
    def create(cls, root: Path) -> SoftHsm:
        """Write the configuration under `root` (idempotent; existing tokens are kept)."""
        hsm = cls(root)
        hsm.token_dir.mkdir(parents=True, exist_ok=True)
        hsm.conf_path.write_text(
            f"directories.tokendir = {hsm.token_dir}\n"
            "objectstore.backend = file\n"
            "log.level = ERROR\n"
            "slots.removable = false\n"
        )
        return hsm

    def token_labels(self) -> list[str]:
        listing = self._util("--show-slots").stdout
        return [
            line.split(":", 1)[1].strip()
            for line in listing.splitlines()
            if line.strip().startswith("Label:") and line.split(":", 1)[1].strip()
        ]

    def _util(self, *args: str) -> subprocess.CompletedProcess[str]:
        util = shutil.which("softhsm2-util")
        if util is None:
            raise FileNotFoundError("softhsm2-util not found: install the softhsm2 package")
        return subprocess.run(
            [util, *args],
            env={**os.environ, **self.env()},
            check=True,
            capture_output=True,
            text=True,
        )

    def init_token(self, label: str, pin: str, so_pin: str = DEV_SO_PIN) -> None:
        """Initialise a token with this label unless one exists already."""
        if label not in self.token_labels():
            self._util("--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", so_pin)
