"""The Helm chart's own pod, in podman, against the real control plane.

`helm template` renders charts/pkcs11-issuer in hsm.mode=softhsm (the default) for the operator
namespace, with the images this session built. Its PIN Secret and ConfigMap are applied to the
control plane, and support/pod_spec.py translates the Deployment's pod template, container by
container, into `podman run` arguments: image, env, command and args, volumes (emptyDirs shared
between the containers, the Secret's and the ConfigMap's keys as files), subPath and readOnly,
user and group, read-only root file system, capabilities, no privilege escalation, memory
limit. A field it does not translate fails the test. Only two things differ from the chart:

- the ports of config.yaml: the pod is on the host network, so health and metrics listen on
  free ports instead of the chart's fixed 8081 and 9402;
- a kubeconfig for the control plane (a mounted file and KUBECONFIG) stands in for the
  ServiceAccount token, as podman has no API server identity to give.

So the SoftHSM sidecar initialises its token and serves it on a socket in the shared emptyDir,
the operator reaches it through p11-kit-client.so with the PIN from the Secret, both as uid
65532 with a read-only root file system. Then the shared end-to-end checks
(support/e2e_checks.py, also run on kind): the quick-start applied in a namespace, every
Certificate Ready, every chain verified by openssl, no key material in any Secret.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from pkcs11_issuer.dev.controlplane import ControlPlane, free_ports
from pkcs11_issuer.dev.operator import install_crds
from support.e2e_checks import check_quickstart, kubectl_for_plane, quickstart_certificates
from support.helm import Helm, find
from support.pod_spec import Container, Mount, translate_pod
from support.podman import Images, Pod, Podman

NONROOT = 65532
TOKEN_LABEL = "dev-issuer"  # what examples/softhsm/quickstart.yaml names, the chart's default
OPERATOR_NAMESPACE = "pkcs11-issuer-pod"
# The test-only stand-in for the ServiceAccount token.
KUBECONFIG = "/var/run/pkcs11-issuer-test/kubeconfig"
READY_TIMEOUT = 90.0


def _status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return error.code


def _image_values(prefix: str, reference: str) -> dict[str, str]:
    """`<prefix>.repository` and `.tag` that make the chart render `reference`."""
    repository, _, tag = reference.rpartition(":")
    assert repository and "/" not in tag, f"not repository:tag: {reference}"
    return {f"{prefix}.repository": repository, f"{prefix}.tag": tag}


def _process_ids(pod: Pod, container: str) -> tuple[set[str], set[str]]:
    """The real, effective, saved and filesystem uids and gids of the container's PID 1."""
    status = pod.exec(container, "cat", "/proc/1/status")
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return set(fields["Uid"].split()), set(fields["Gid"].split())


def _apply(control_plane: ControlPlane, objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Apply the objects; returns them as the API server now has them."""
    listing = json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
    control_plane.kubectl("apply", "-f", "-", input=listing)
    live = control_plane.kubectl("get", "-f", "-", "-o=json", input=listing).stdout
    items: list[dict[str, Any]] = json.loads(live)["items"]
    return items


@dataclass
class ChartsPod:
    """The chart's pod, translated: its containers by name, the operator configuration as
    mounted, and the PINs in its Secret."""

    name: str
    containers: dict[str, Container]
    config: dict[str, Any]
    pins: list[str]


@pytest.fixture
def charts_pod(
    helm: Helm, control_plane: ControlPlane, images: Images, tmp_path: Path
) -> ChartsPod:
    install_crds(control_plane)
    objects = helm.template(
        namespace=OPERATOR_NAMESPACE,
        sets={
            "hsm.mode": "softhsm",
            **_image_values("image", images.operator),
            **_image_values("softhsm.image", images.sidecar),
        },
    )
    pin_secret = find(objects, "Secret")
    config_map = find(objects, "ConfigMap")
    # The one change to the chart's configuration, forced by podman's host network: the pod
    # shares the host's ports, so health and metrics listen on free ones, not 8081 and 9402.
    config = yaml.safe_load(config_map["data"]["config.yaml"])
    config["health"]["port"], config["metrics"]["port"] = free_ports(2)
    config_map["data"]["config.yaml"] = yaml.safe_dump(config)

    control_plane.kubectl("create", "namespace", OPERATOR_NAMESPACE, check=False)
    live = _apply(control_plane, [pin_secret, config_map])
    name = f"pkcs11-issuer-test-{secrets.token_hex(3)}"
    containers = translate_pod(
        find(objects, "Deployment")["spec"]["template"]["spec"],
        objects=live,
        root=tmp_path / "volumes",
        field_values={"metadata.name": name, "metadata.namespace": OPERATOR_NAMESPACE},
        owner=(NONROOT, NONROOT),
    )
    by_name = {container.name: container for container in containers}
    assert list(by_name) == ["operator", "softhsm"], list(by_name)
    assert by_name["operator"].image == images.operator
    assert by_name["softhsm"].image == images.sidecar

    # The test-only addition: podman has no API server identity to give the pod, so instead of
    # the ServiceAccount token the operator gets a kubeconfig for the control plane.
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_bytes(control_plane.kubeconfig_path.read_bytes())
    kubeconfig.chmod(0o400)
    os.chown(kubeconfig, NONROOT, NONROOT)
    by_name["operator"].mounts.append(Mount(kubeconfig, KUBECONFIG, read_only=True))
    by_name["operator"].env["KUBECONFIG"] = KUBECONFIG

    pins = [base64.b64decode(value).decode() for value in pin_secret["data"].values()]
    return ChartsPod(name, by_name, config, pins)


def test_the_charts_pod_in_podman(
    control_plane: ControlPlane,
    podman: Podman,
    charts_pod: ChartsPod,
    namespace: str,
    tmp_path: Path,
) -> None:
    operator, sidecar = charts_pod.containers["operator"], charts_pod.containers["softhsm"]
    health, metrics = charts_pod.config["health"]["port"], charts_pod.config["metrics"]["port"]
    assert sidecar.env["SOFTHSM_TOKEN_LABEL"] == TOKEN_LABEL
    socket = sidecar.host_path(sidecar.env["P11_KIT_SOCKET"])
    # The operator connects to the same socket, through the same emptyDir.
    address = operator.env["P11_KIT_SERVER_ADDRESS"].removeprefix("unix:path=")
    assert operator.host_path(address) == socket, (address, socket)

    with Pod(podman, charts_pod.name) as pod:
        # In the chart's order, as the kubelet starts them, none waiting for another.
        running = {name: container.run(pod) for name, container in charts_pod.containers.items()}
        pod.wait_for("the sidecar's socket", socket.is_socket, 30)
        pod.wait_for(
            f"/readyz on port {health} to answer 200",
            lambda: _status(health, "/readyz") == 200,
            READY_TIMEOUT,
        )

        # Non-root, as the chart asks, the images say and the processes really are.
        for name, container in running.items():
            for what in (container, charts_pod.containers[name].image):
                user = podman("inspect", "--format={{.Config.User}}", what).stdout.strip()
                assert user == f"{NONROOT}:{NONROOT}", (what, user)
            assert _process_ids(pod, container) == ({str(NONROOT)}, {str(NONROOT)}), pod.logs()
        assert pod.exec(running["operator"], "id", "-u").strip() == str(NONROOT)
        # The image's ENTRYPOINT `pkcs11-issuer run` started it, with the chart's args in place
        # of the image's CMD, which names the same configuration file.
        image = json.loads(podman("image", "inspect", operator.image).stdout)[0]["Config"]
        assert image["Entrypoint"][1:] == ["run"], image["Entrypoint"]
        assert image["Cmd"] == ["--config=/etc/pkcs11-issuer/config.yaml"], image["Cmd"]
        assert image["Cmd"][0] in operator.args, operator.args
        command = pod.exec(running["operator"], "cat", "/proc/1/cmdline").split("\0")
        assert command[-len(operator.args) - 2 :] == ["run", *operator.args, ""], command

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
        tokens = sidecar.host_path(sidecar.env["SOFTHSM_TOKEN_DIR"])
        assert any(tokens.iterdir()), "the sidecar's token directory is empty"
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5) as answer:
            assert "pkcs11_issuer_certificate_ready_status" in answer.read().decode()
        logs = pod.logs()
        assert not [pin for pin in charts_pod.pins if pin in logs], "a PIN in a container's log"

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
