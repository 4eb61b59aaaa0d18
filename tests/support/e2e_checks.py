"""End-to-end checks shared by every place the operator runs as it would in a cluster: the podman
pod of tests/container and the kind cluster of tests/kind (scripts/e2e-kind.sh).

They only talk to the API server through a `Kubectl` (run kubectl with these arguments, return
its stdout) and to `openssl` on this machine, so the same assertions hold whatever runs the
operator:

- examples/softhsm/quickstart.yaml, applied as written in a namespace;
- every Certificate it defines becomes Ready;
- every Secret holds tls.crt, ca.crt and a `pkcs11:` URI, and no key material anywhere;
- each chain verifies with the real `openssl verify`, against its own ca.crt and against the
  quick-start's root.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    load_der_private_key,
    load_pem_private_key,
)

from pkcs11_issuer.dev.controlplane import ControlPlane, find_repo_root
from support.tools import need_executable

QUICKSTART = Path("examples/softhsm/quickstart.yaml")
QUICKSTART_ROOT = "root-ca"  # the quick-start's self-signed root CA Certificate
KEY_REFERENCE_TYPE = "pkcs11-issuer.io/key-reference"
READY_TIMEOUT = 180.0
CERTIFICATES = "certificates.pkcs11-issuer.io"


class Kubectl(Protocol):
    def __call__(self, *args: str, input: str | None = None) -> str:
        """Run kubectl with `args` (stdin `input`); return stdout, raise if it fails."""
        ...


def kubectl_for_plane(plane: ControlPlane) -> Kubectl:
    """The local control plane's kubectl, as its admin."""

    def run(*args: str, input: str | None = None) -> str:
        return plane.kubectl(*args, input=input).stdout

    return run


def kubectl_for_kubeconfig(kubeconfig: Path, kubectl: str = "kubectl") -> Kubectl:
    """Any kubectl binary with a kubeconfig file (a kind cluster's)."""

    def run(*args: str, input: str | None = None) -> str:
        result = subprocess.run(
            [kubectl, f"--kubeconfig={kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}"
            )
        return result.stdout

    return run


@dataclass(frozen=True)
class Issued:
    """One Certificate of the quick-start once checked: its Secret and the chain in it."""

    certificate: str
    secret_name: str
    secret: dict[str, Any]
    chain: list[x509.Certificate]
    key_uri: str


def quickstart_certificates(path: Path | None = None) -> dict[str, str]:
    """Certificate name -> secretName, as the quick-start defines them."""
    text = (path or find_repo_root() / QUICKSTART).read_text()
    return {
        doc["metadata"]["name"]: doc["spec"]["secretName"]
        for doc in yaml.safe_load_all(text)
        if doc and doc.get("kind") == "Certificate"
    }


def apply_quickstart(kubectl: Kubectl, namespace: str) -> None:
    quickstart = find_repo_root() / QUICKSTART
    kubectl("apply", f"--namespace={namespace}", "-f", "-", input=quickstart.read_text())


def _ready(certificate: dict[str, Any]) -> dict[str, Any]:
    for condition in (certificate.get("status") or {}).get("conditions") or ():
        if condition.get("type") == "Ready":
            return dict(condition)
    return {}


def wait_until_ready(
    kubectl: Kubectl,
    namespace: str,
    names: list[str],
    *,
    timeout: float = READY_TIMEOUT,
    diagnostics: Callable[[], str] = lambda: "",
) -> dict[str, dict[str, Any]]:
    """Wait until each named Certificate is Ready=True; returns them by name. On timeout the
    assertion says where each one stands, followed by `diagnostics()` (the operator's logs)."""
    deadline = time.monotonic() + timeout
    found: dict[str, dict[str, Any]] = {}
    while True:
        listing = json.loads(kubectl("get", CERTIFICATES, f"--namespace={namespace}", "-o=json"))
        found = {item["metadata"]["name"]: item for item in listing["items"]}
        if all(_ready(found.get(name, {})).get("status") == "True" for name in names):
            return {name: found[name] for name in names}
        if time.monotonic() > deadline:
            break
        time.sleep(1.0)
    states = "\n".join(
        f"  {name}: "
        + (json.dumps(_ready(found[name])) if name in found else "(no such Certificate)")
        for name in names
    )
    raise AssertionError(
        f"timed out after {timeout:.0f}s waiting for Certificates in {namespace} to be Ready:\n"
        f"{states}\n{diagnostics()}"
    )


def _decoded(secret: dict[str, Any]) -> dict[str, bytes]:
    return {key: base64.b64decode(value) for key, value in (secret.get("data") or {}).items()}


def assert_no_key_material(secret: dict[str, Any]) -> None:
    """Nothing in the Secret (data, annotations, labels) is or contains a private key."""
    where = f"Secret {secret['metadata'].get('namespace')}/{secret['metadata']['name']}"
    assert "PRIVATE KEY" not in json.dumps(secret), f"{where}: a PEM private key"
    for key, raw in _decoded(secret).items():
        assert b"PRIVATE KEY" not in raw, f"{where}: a PEM private key in {key}"
        for load in (load_der_private_key, load_pem_private_key):
            try:
                load(raw, None)
            except TypeError:  # "password was not given": an encrypted private key
                pass
            except (ValueError, UnsupportedAlgorithm):
                continue
            raise AssertionError(f"{where}: {key} holds a private key")
    assert not {"tls.key", "key.pem", "private-key"} & secret.get("data", {}).keys(), where


def openssl_verify(chain: list[x509.Certificate], trusted_pem: bytes, workdir: Path) -> str:
    """`openssl verify` of chain[0], with chain[1:] as untrusted intermediates."""
    openssl = need_executable("openssl", "apt-get install openssl")
    workdir.mkdir(parents=True, exist_ok=True)
    trusted = workdir / "trusted.pem"
    trusted.write_bytes(trusted_pem)
    leaf = workdir / "leaf.pem"
    leaf.write_bytes(chain[0].public_bytes(Encoding.PEM))
    args = [openssl, "verify", "-CAfile", str(trusted)]
    if chain[1:]:
        untrusted = workdir / "untrusted.pem"
        untrusted.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in chain[1:]))
        args += ["-untrusted", str(untrusted)]
    result = subprocess.run([*args, str(leaf)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"openssl verify: {result.stdout}{result.stderr}"
    return result.stdout


def check_secret(
    kubectl: Kubectl, namespace: str, certificate: str, secret_name: str, workdir: Path
) -> Issued:
    """The Secret of a Ready Certificate: its fields, no key material, a chain that verifies
    against its own ca.crt."""
    secret = json.loads(
        kubectl("get", "secret", secret_name, f"--namespace={namespace}", "-o=json")
    )
    where = f"Secret {namespace}/{secret_name}"
    assert secret["type"] == KEY_REFERENCE_TYPE, f"{where}: type {secret['type']}"
    data = _decoded(secret)
    assert {"tls.crt", "ca.crt", "tls.pkcs11-uri"} <= data.keys(), f"{where}: {sorted(data)}"
    assert_no_key_material(secret)
    key_uri = data["tls.pkcs11-uri"].decode()
    assert key_uri.startswith("pkcs11:"), f"{where}: tls.pkcs11-uri {key_uri!r}"
    assert "pin-value" not in key_uri and "pin-source" not in key_uri, f"{where}: {key_uri}"
    chain = x509.load_pem_x509_certificates(data["tls.crt"])
    openssl_verify(chain, data["ca.crt"], workdir / secret_name)
    return Issued(certificate, secret_name, secret, chain, key_uri)


def check_quickstart(
    kubectl: Kubectl,
    namespace: str,
    workdir: Path,
    *,
    timeout: float = READY_TIMEOUT,
    diagnostics: Callable[[], str] = lambda: "",
) -> dict[str, Issued]:
    """Apply the quick-start in `namespace` (which must exist), wait until every Certificate is
    Ready, and check every Secret and chain; returns what was checked, by Certificate name."""
    wanted = quickstart_certificates()
    apply_quickstart(kubectl, namespace)
    wait_until_ready(kubectl, namespace, list(wanted), timeout=timeout, diagnostics=diagnostics)
    issued = {
        name: check_secret(kubectl, namespace, name, secret_name, workdir)
        for name, secret_name in wanted.items()
    }
    # Every chain ends at the quick-start's root, whose key never left the HSM either.
    root = issued[QUICKSTART_ROOT].chain[0]
    for item in issued.values():
        openssl_verify(
            item.chain, root.public_bytes(Encoding.PEM), workdir / f"{item.secret_name}-root"
        )
    return issued
