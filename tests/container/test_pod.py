"""The images as the Helm chart runs them, in one podman pod against the real control plane.

The SoftHSM sidecar initialises its token and serves it on a socket in a directory shared with
the operator container, which reaches it through /usr/lib/pkcs11-issuer/p11-kit-client.so and
reads its PIN from a Secret, as in hsm.mode=softhsm. Both run as uid 65532 with a read-only
root filesystem (the sidecar without even a /tmp). Then the shared end-to-end checks
(support/e2e_checks.py, also run on kind): the quick-start applied in a namespace, every
Certificate Ready, every chain verified by openssl, no key material in any Secret.
"""

from __future__ import annotations

import json
import os
import secrets
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from pkcs11_issuer.dev.controlplane import ControlPlane, free_ports
from pkcs11_issuer.dev.operator import install_crds
from support.e2e_checks import check_quickstart, kubectl_for_plane, quickstart_certificates
from support.podman import Images, Pod, Podman

NONROOT = 65532
TOKEN_LABEL = "dev-issuer"  # what examples/softhsm/quickstart.yaml names
OPERATOR_NAMESPACE = "pkcs11-issuer-pod"
PIN_SECRET = "softhsm-pin"
CLIENT_MODULE = "/usr/lib/pkcs11-issuer/p11-kit-client.so"
SOCKET_DIR = "/run/p11-kit"
READY_TIMEOUT = 90.0


def _status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return error.code


def _owned_by_nonroot(*paths: Path) -> None:
    """Files the containers (uid 65532, no user namespace) read or write."""
    for path in paths:
        os.chown(path, NONROOT, NONROOT)


def _operator_config(health: int, metrics: int) -> dict[str, Any]:
    return {
        "modules": {"p11kit": CLIENT_MODULE},
        "clusterResourceNamespace": OPERATOR_NAMESPACE,
        "tokens": [
            {
                "name": "dev",
                "module": "p11kit",
                "uri": f"pkcs11:token={TOKEN_LABEL}",
                "pin": {"secret": {"name": PIN_SECRET, "namespace": OPERATOR_NAMESPACE}},
                "grants": [{"namespaces": ["*"]}],
            }
        ],
        "health": {"port": health},
        "metrics": {"port": metrics},
    }


def _process_ids(pod: Pod, container: str) -> tuple[set[str], set[str]]:
    """The real, effective, saved and filesystem uids and gids of the container's PID 1."""
    status = pod.exec(container, "cat", "/proc/1/status")
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return set(fields["Uid"].split()), set(fields["Gid"].split())


def test_operator_and_softhsm_sidecar_in_one_pod(
    control_plane: ControlPlane,
    podman: Podman,
    images: Images,
    namespace: str,
    tmp_path: Path,
) -> None:
    install_crds(control_plane)
    pin = secrets.token_hex(12)
    control_plane.kubectl("create", "namespace", OPERATOR_NAMESPACE, check=False)
    control_plane.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": PIN_SECRET, "namespace": OPERATOR_NAMESPACE},
                "stringData": {"pin": pin},
            }
        ),
    )

    # What the chart mounts: the token volume, the PIN Secret (sidecar), the shared socket
    # directory, the configuration (operator); the kubeconfig stands in for the ServiceAccount.
    tokens, socket_dir, pin_dir = (tmp_path / name for name in ("tokens", "socket", "pin"))
    for directory in (tokens, socket_dir, pin_dir):
        directory.mkdir()
    (pin_dir / "pin").write_text(pin + "\n")
    (pin_dir / "pin").chmod(0o400)
    health, metrics = free_ports(2)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(_operator_config(health, metrics)))
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_bytes(control_plane.kubeconfig_path.read_bytes())
    kubeconfig.chmod(0o400)
    _owned_by_nonroot(tokens, socket_dir, pin_dir, pin_dir / "pin", kubeconfig)

    with Pod(podman, f"pkcs11-issuer-test-{secrets.token_hex(3)}") as pod:
        sidecar = pod.run(
            "softhsm",
            images.sidecar,
            volumes=[
                (tokens, "/var/lib/softhsm/tokens", ""),
                (pin_dir, "/etc/softhsm-pin", "ro"),
                (socket_dir, SOCKET_DIR, ""),
            ],
            env={
                "SOFTHSM_TOKEN_LABEL": TOKEN_LABEL,
                "SOFTHSM_PIN_FILE": "/etc/softhsm-pin/pin",
            },
            # Stricter than the chart, which gives it an emptyDir /tmp: the configuration
            # goes next to the socket then.
            options=["--read-only", "--read-only-tmpfs=false"],
        )
        pod.wait_for("the sidecar's socket", (socket_dir / "pkcs11.sock").is_socket, 30)
        operator = pod.run(
            "operator",
            images.operator,
            volumes=[
                (config, "/etc/pkcs11-issuer/config.yaml", "ro"),
                (kubeconfig, "/var/run/pkcs11-issuer/kubeconfig", "ro"),
                (socket_dir, SOCKET_DIR, ""),
            ],
            env={
                "KUBECONFIG": "/var/run/pkcs11-issuer/kubeconfig",
                "P11_KIT_SERVER_ADDRESS": f"unix:path={SOCKET_DIR}/pkcs11.sock",
            },
            # A read-only root with a writable /tmp, as the chart's emptyDir.
            options=["--read-only"],
        )
        pod.wait_for(
            f"/readyz on port {health} to answer 200",
            lambda: _status(health, "/readyz") == 200,
            READY_TIMEOUT,
        )

        # Non-root, as the image says and as the processes really are.
        for container in (operator, sidecar):
            user = podman("inspect", "--format={{.Config.User}}", container).stdout.strip()
            assert user == f"{NONROOT}:{NONROOT}", (container, user)
            assert _process_ids(pod, container) == ({str(NONROOT)}, {str(NONROOT)}), pod.logs()
        assert pod.exec(operator, "id", "-u").strip() == str(NONROOT)
        # The image's defaults started it: ENTRYPOINT `pkcs11-issuer run`, CMD --config=...
        command = pod.exec(operator, "cat", "/proc/1/cmdline").split("\0")
        assert command[-3:] == ["run", "--config=/etc/pkcs11-issuer/config.yaml", ""], command

        assert _status(health, "/healthz") == 200
        assert _status(health, "/readyz") == 200

        issued = check_quickstart(
            kubectl_for_plane(control_plane),
            namespace,
            tmp_path / "checks",
            timeout=READY_TIMEOUT,
            diagnostics=pod.logs,
        )
        assert issued.keys() == quickstart_certificates().keys()
        for item in issued.values():
            assert f"token={TOKEN_LABEL}" in item.key_uri, item.key_uri
        # The keys are in the sidecar's token directory, not in the operator container.
        assert any(tokens.iterdir()), "the sidecar's token directory is empty"
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5) as answer:
            assert "pkcs11_issuer_certificate_ready_status" in answer.read().decode()
        assert pin not in pod.logs(), "a PIN in a container's log"

        # Deleting the Certificates runs the operator's finalizers, which destroy their keys
        # through the sidecar; afterwards nothing is left stuck for the namespace's deletion.
        deleted = control_plane.kubectl(
            "delete",
            "certificates.pkcs11-issuer.io",
            "--all",
            f"--namespace={namespace}",
            "--timeout=60s",
            check=False,
        )
        assert deleted.returncode == 0, f"{deleted.stderr}\n{pod.logs()}"
