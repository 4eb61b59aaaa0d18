"""`make run` (`pkcs11-issuer dev run`): the embedded default a newcomer starts with.

A SoftHSM token under .dev/softhsm (PIN in .dev/pin), an operator configuration in
.dev/config.yaml that allowlists SoftHSM, an `hsm check` against the token, and the local
control plane, all kept until Ctrl-C. Everything lives under .dev/ (gitignored) and is reused
by the next run.
"""

from __future__ import annotations

import argparse
import secrets
from dataclasses import dataclass
from pathlib import Path

from pkcs11_issuer.dev.softhsm import SoftHsm, softhsm_module

DEV_TOKEN_LABEL = "dev-issuer"  # noqa: S105 (a label, not a secret)


@dataclass(frozen=True)
class DevHsm:
    """The files `make run` keeps under .dev/ for the SoftHSM side."""

    softhsm: SoftHsm
    config_path: Path
    pin_path: Path

    def check_arguments(self) -> argparse.Namespace:
        """The arguments `pkcs11-issuer hsm check` would get for this token."""
        return argparse.Namespace(
            module="softhsm",
            config=str(self.config_path),
            token_uri=f"pkcs11:token={DEV_TOKEN_LABEL}",
            pin_file=str(self.pin_path),
            max_sessions=4,
            key_algorithm=None,
        )


def prepare_dev_hsm(dev_dir: Path) -> DevHsm:
    """Create (or reuse) the development token, its PIN file and the operator configuration."""
    module = softhsm_module()
    if module is None:
        raise FileNotFoundError("the SoftHSM2 module is missing: run `make run`, which installs it")
    softhsm = SoftHsm.create(dev_dir / "softhsm")
    pin_path = dev_dir / "pin"
    if not pin_path.exists():
        pin_path.write_text(secrets.token_hex(8) + "\n")
        pin_path.chmod(0o600)
    pin = pin_path.read_text().strip()
    softhsm.init_token(DEV_TOKEN_LABEL, pin)
    config_path = dev_dir / "config.yaml"
    config_path.write_text(f"modules:\n  softhsm: {module}\n")
    return DevHsm(softhsm, config_path, pin_path)
