"""`make run` (`pkcs11-issuer dev run`): the embedded default a newcomer starts with.

A SoftHSM token under .dev/softhsm (PIN in .dev/pin, and in a Secret for the operator), an
operator configuration in .dev/config.yaml that allowlists SoftHSM and grants the token to
every namespace, an `hsm check` against the token, the local control plane, the operator,
and examples/softhsm/quickstart.yaml applied in namespace `demo`, all kept until Ctrl-C.
Everything lives under .dev/ (gitignored) and is reused by the next run.
"""

from __future__ import annotations

import argparse
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from pkcs11_issuer.dev.controlplane import ControlPlane, find_repo_root, free_ports
from pkcs11_issuer.dev.operator import OperatorProcess, install_crds
from pkcs11_issuer.dev.softhsm import SoftHsm, softhsm_module

DEV_TOKEN_LABEL = "dev-issuer"  # noqa: S105 (a label, not a secret)
OPERATOR_NAMESPACE = "pkcs11-issuer"
DEMO_NAMESPACE = "demo"
PIN_SECRET = "dev-issuer-pin"  # noqa: S105 (a Secret's name)
QUICKSTART = Path("examples/softhsm/quickstart.yaml")
READY_TIMEOUT = 120.0


@dataclass(frozen=True)
class DevHsm:
    """The files `make run` keeps under .dev/ for the SoftHSM side."""

    softhsm: SoftHsm
    config_path: Path
    pin_path: Path

    @property
    def pin(self) -> str:
        return self.pin_path.read_text().strip()

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


def operator_config(module: str, *, health_port: int, metrics_port: int) -> dict[str, object]:
    return {
        "modules": {"softhsm": module},
        "clusterResourceNamespace": OPERATOR_NAMESPACE,
        "tokens": [
            {
                "name": "dev",
                "module": "softhsm",
                "uri": f"pkcs11:token={DEV_TOKEN_LABEL}",
                "pin": {"secret": {"name": PIN_SECRET, "key": "pin"}},
                "grants": [{"namespaces": ["*"]}],
            }
        ],
        "health": {"port": health_port},
        "metrics": {"port": metrics_port},
    }


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
    softhsm.init_token(DEV_TOKEN_LABEL, pin_path.read_text().strip())
    config_path = dev_dir / "config.yaml"
    health_port, metrics_port = free_ports(2)
    config = operator_config(module, health_port=health_port, metrics_port=metrics_port)
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return DevHsm(softhsm, config_path, pin_path)


def start_operator(plane: ControlPlane, hsm: DevHsm, dev_dir: Path) -> OperatorProcess:
    """CRDs, the PIN Secret, and the operator process, ready."""
    install_crds(plane)
    for namespace in (OPERATOR_NAMESPACE, DEMO_NAMESPACE):
        plane.kubectl("create", "namespace", namespace, check=False)
    pin_secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": PIN_SECRET, "namespace": OPERATOR_NAMESPACE},
        "stringData": {"pin": hsm.pin},
    }
    plane.kubectl("apply", "-f", "-", input=json.dumps(pin_secret))
    config = yaml.safe_load(hsm.config_path.read_text())
    process = OperatorProcess(
        hsm.config_path,
        kubeconfig=plane.kubeconfig_path,
        env=hsm.softhsm.env(),
        log_path=dev_dir / "operator.log",
        health_port=config["health"]["port"],
        metrics_port=config["metrics"]["port"],
    )
    return process.start()


def apply_quickstart(plane: ControlPlane) -> list[str]:
    """Apply the SoftHSM walkthrough and wait until its Certificates are Ready; returns
    `kubectl get` lines for the user."""
    plane.kubectl(
        "apply", f"--namespace={DEMO_NAMESPACE}", "-f", str(find_repo_root() / QUICKSTART)
    )
    plane.kubectl(
        "wait",
        f"--namespace={DEMO_NAMESPACE}",
        "--for=condition=Ready",
        f"--timeout={READY_TIMEOUT:.0f}s",
        "certificates.pkcs11-issuer.io",
        "--all",
    )
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        listing = plane.kubectl("get", f"--namespace={DEMO_NAMESPACE}", "hsmcert").stdout
        if listing.strip():
            return listing.splitlines()
        time.sleep(0.5)
    return []
