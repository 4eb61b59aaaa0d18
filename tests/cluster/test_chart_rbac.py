"""The chart's RBAC, with the chart's own ServiceAccount and a real token.

The chart is installed with `helm install`; a TokenRequest token for its ServiceAccount (what a
Pod's projected token is) goes into a kubeconfig, and the real operator process runs with it and
with the configuration the chart rendered into its ConfigMap. Only what cannot exist outside a
Pod is changed: the p11-kit client's path (the image's path is not on this machine) and the
health and metrics ports (free ones here). Behind the p11-kit socket, as in the chart's SoftHSM
sidecar, is the session's SoftHSM token operator-main.

The operator must do its whole job with that identity, without one refused request in its log;
and the same identity must be refused everything else.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from pkcs11_issuer.dev.controlplane import ControlPlane, free_ports
from pkcs11_issuer.dev.operator import OperatorProcess, install_crds
from pkcs11_issuer.dev.p11kit import P11KitServer, p11kit_client_module
from pkcs11_issuer.dev.softhsm import SoftHsm, softhsm_module
from support.helm import Helm
from support.hsm_fixtures import OPERATOR_MAIN, TEST_PIN
from support.operator_fixtures import condition, resource_path
from support.tools import need_executable, unavailable
from support.waiting import wait_until

POD_NAME = "pkcs11-issuer-rbac-0"
GROUP = "pkcs11-issuer.io"


@dataclass
class Installed:
    plane: ControlPlane
    namespace: str  # the release's
    workload: str  # where the test's Issuers and Certificates live
    service_account: str
    kubeconfig: Path  # the ServiceAccount's token
    process: OperatorProcess

    def wait_for(self, what: str, probe: Callable[[], Any], timeout: float = 60.0) -> Any:
        return wait_until(what, probe, timeout, diagnostics=self.process.log_tail)

    def ready(self, kind: str, namespace: str | None, name: str) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            status, body = self.plane.request("GET", resource_path(kind, namespace, name))
            return body if status == 200 and condition(body).get("status") == "True" else None

        return self.wait_for(f"{kind} {namespace or ''}/{name} Ready", probe)  # type: ignore[no-any-return]

    def can_i(self, *args: str) -> bool:
        result = self.plane.kubectl("auth", "can-i", *args, kubeconfig=self.kubeconfig, check=False)
        answer = result.stdout.strip()
        assert answer in {"yes", "no"}, f"kubectl auth can-i {' '.join(args)}: {result.stderr}"
        return answer == "yes"

    def as_operator(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return self.plane.kubectl(*args, kubeconfig=self.kubeconfig, input=input, check=False)


@pytest.fixture(scope="module")
def installed(
    helm: Helm,
    control_plane: ControlPlane,
    softhsm: SoftHsm,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Installed]:
    need_executable("p11-kit", "apt-get install p11-kit (or run `make test`)")
    client = p11kit_client_module()
    module = softhsm_module()
    if client is None or module is None:
        unavailable("p11-kit-client.so and SoftHSM", "apt-get install p11-kit-modules softhsm2")
    assert client is not None and module is not None
    work = tmp_path_factory.mktemp("chart-rbac")
    suffix = secrets.token_hex(3)
    namespace, workload, release = f"chart-rbac-{suffix}", f"chart-rbac-work-{suffix}", "rbac"
    for name in (namespace, workload):
        control_plane.kubectl("create", "namespace", name)
    install_crds(control_plane)
    helm = helm.with_cluster(control_plane)
    helm.install(
        release,
        namespace,
        sets={
            # The CRDs are the session's (install_crds); test_chart.py installs them with Helm.
            "crds.enabled": "false",
            "softhsm.tokenLabel": OPERATOR_MAIN,
            "softhsm.pin.existingSecret": "main-pin",
            "leaderElection.enabled": "true",
        },
    )
    control_plane.kubectl(
        "create", "secret", "generic", "main-pin", f"--namespace={namespace}",
        f"--from-literal=pin={TEST_PIN}",
    )  # fmt: skip
    fullname = f"{release}-pkcs11-issuer"
    status, config_map = control_plane.request(
        "GET", f"/api/v1/namespaces/{namespace}/configmaps/{fullname}"
    )
    assert status == 200, config_map
    config = yaml.safe_load(config_map["data"]["config.yaml"])
    assert config["modules"] == {"p11kit": "/usr/lib/pkcs11-issuer/p11-kit-client.so"}
    assert config["leaderElection"]["namespace"] == namespace
    health, metrics = free_ports(2)
    config["modules"]["p11kit"] = client
    config["health"], config["metrics"] = {"port": health}, {"port": metrics}
    config_path = work / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))

    kubeconfig = control_plane.service_account_kubeconfig(
        namespace, fullname, work / "operator.kubeconfig"
    )
    sidecar = P11KitServer(
        module, f"pkcs11:token={OPERATOR_MAIN}", work / "p11-kit.sock", softhsm.env()
    )
    process = OperatorProcess(
        config_path,
        kubeconfig=kubeconfig,
        env={
            "P11_KIT_SERVER_ADDRESS": sidecar.address,
            "POD_NAME": POD_NAME,
            "POD_NAMESPACE": namespace,
            "PATH": os.environ.get("PATH", ""),
        },
        log_path=work / "operator.log",
        health_port=health,
        metrics_port=metrics,
    )
    try:
        with sidecar, process:
            yield Installed(control_plane, namespace, workload, fullname, kubeconfig, process)
    finally:
        helm.run("uninstall", release, f"--namespace={namespace}", check=False)
        for name in (workload, namespace):
            control_plane.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")


def test_the_operator_does_its_whole_job_with_the_charts_service_account(
    installed: Installed,
) -> None:
    plane, workload = installed.plane, installed.workload
    cluster_issuer = f"chart-rbac-{secrets.token_hex(3)}"
    token = f"pkcs11:token={OPERATOR_MAIN}"
    manifests = [
        {"kind": "ClusterIssuer", "metadata": {"name": cluster_issuer}, "spec": {"selfSigned": {}}},
        {"kind": "Issuer", "metadata": {"name": "selfsigned"}, "spec": {"selfSigned": {}}},
        {
            "kind": "Certificate",
            "metadata": {"name": "root-ca"},
            "spec": {
                "secretName": "root-ca",
                "isCA": True,
                "commonName": "Chart RBAC Root CA",
                "privateKey": {"algorithm": "ECDSA", "size": 256, "pkcs11": token},
                "issuerRef": {"name": "selfsigned"},
            },
        },
        {"kind": "Issuer", "metadata": {"name": "ca"}, "spec": {"ca": {"secretName": "root-ca"}}},
        {
            "kind": "Certificate",
            "metadata": {"name": "leaf"},
            "spec": {
                "secretName": "leaf-tls",
                "dnsNames": ["leaf.example.com"],
                "privateKey": {"algorithm": "ECDSA", "size": 256, "pkcs11": token},
                "issuerRef": {"name": "ca"},
            },
        },
    ]
    for manifest in manifests:
        manifest["apiVersion"] = f"{GROUP}/v1alpha1"
    plane.kubectl(
        "apply", f"--namespace={workload}", "-f", "-", input=yaml.safe_dump_all(manifests)
    )
    try:
        installed.ready("ClusterIssuer", None, cluster_issuer)
        installed.ready("Issuer", workload, "selfsigned")
        installed.ready("Certificate", workload, "root-ca")
        installed.ready("Issuer", workload, "ca")
        leaf = installed.ready("Certificate", workload, "leaf")
        assert leaf["metadata"]["finalizers"] == ["pkcs11-issuer.io/hsm-key-cleanup"]

        status, secret = plane.request("GET", f"/api/v1/namespaces/{workload}/secrets/leaf-tls")
        assert status == 200, secret
        assert secret["type"] == "pkcs11-issuer.io/key-reference"
        assert {"tls.crt", "ca.crt", "tls.pkcs11-uri"} <= secret["data"].keys()

        def leaf_events() -> list[dict[str, Any]]:
            _, events = plane.request("GET", f"/api/v1/namespaces/{workload}/events")
            return [
                event
                for event in events["items"]
                if event["involvedObject"].get("kind") == "Certificate"
                and event["involvedObject"].get("name") == "leaf"
            ]

        assert installed.wait_for("an Event about Certificate leaf", leaf_events)

        status, lease = plane.request(
            "GET",
            f"/apis/coordination.k8s.io/v1/namespaces/{installed.namespace}/leases/pkcs11-issuer",
        )
        assert status == 200, lease
        assert lease["spec"]["holderIdentity"].startswith(f"{POD_NAME}_"), lease["spec"]

        for name in ("leaf", "root-ca"):
            plane.kubectl(
                "delete", "certificate.pkcs11-issuer.io", name, f"-n={workload}", "--wait=false"
            )
        for name in ("leaf", "root-ca"):
            path = resource_path("Certificate", workload, name)
            installed.wait_for(
                f"Certificate {name} deleted (finalizer removed)",
                lambda path=path: plane.request("GET", path)[0] == 404,
            )
    finally:
        plane.kubectl("delete", "clusterissuer.pkcs11-issuer.io", cluster_issuer, "--wait=false")

    log = installed.process.log_path.read_text(errors="replace")
    # Our client's 403s, and kopf's own words when a watch or list is refused.
    signs = ("forbidden", " 403", "not enough permissions")
    refused = [line for line in log.splitlines() if any(s in line.lower() for s in signs)]
    assert not refused, "the operator was refused requests:\n" + "\n".join(refused[-20:])


# What the operator needs (a missing one would show in the test above too, but this names it).
ALLOWED = [
    ("watch", f"certificates.{GROUP}", "--all-namespaces"),
    ("list", f"clusterissuers.{GROUP}"),
    ("patch", f"certificates.{GROUP}", "-n={workload}"),
    ("patch", f"issuers.{GROUP}", "--subresource=status", "-n={workload}"),
    ("patch", f"clusterissuers.{GROUP}", "--subresource=status"),
    ("create", "secrets", "-n={workload}"),
    ("update", "secrets", "-n={workload}"),
    ("watch", "secrets", "--all-namespaces"),
    ("create", "events", "-n={workload}"),
    ("create", "leases.coordination.k8s.io", "-n={namespace}"),
    ("update", "leases.coordination.k8s.io/pkcs11-issuer", "-n={namespace}"),
]
# What it must never be able to do.
REFUSED = [
    ("create", "pods", "-n={workload}"),
    ("list", "pods", "--all-namespaces"),
    ("create", "pods/exec", "-n={namespace}"),
    ("delete", "namespaces"),
    ("get", "nodes"),
    ("get", "configmaps", "-n={namespace}"),
    ("create", "deployments.apps", "-n={namespace}"),
    ("update", "deployments.apps", "-n={namespace}"),
    ("delete", "secrets", "-n={workload}"),
    ("delete", "secrets", "-n={namespace}"),
    ("create", f"certificates.{GROUP}", "-n={workload}"),
    ("delete", f"certificates.{GROUP}", "-n={workload}"),
    ("update", f"issuers.{GROUP}", "-n={workload}"),
    ("delete", f"clusterissuers.{GROUP}"),
    ("create", "clusterroles.rbac.authorization.k8s.io"),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
    ("create", "rolebindings.rbac.authorization.k8s.io", "-n={namespace}"),
    ("escalate", "clusterroles.rbac.authorization.k8s.io"),
    ("bind", "clusterroles.rbac.authorization.k8s.io"),
    ("create", "customresourcedefinitions.apiextensions.k8s.io"),
    ("update", "customresourcedefinitions.apiextensions.k8s.io"),
    ("patch", "customresourcedefinitions.apiextensions.k8s.io"),
    ("delete", "customresourcedefinitions.apiextensions.k8s.io"),
    ("update", "leases.coordination.k8s.io/pkcs11-issuer", "-n={workload}"),
    ("create", "leases.coordination.k8s.io", "-n=kube-system"),
    ("update", "leases.coordination.k8s.io/kube-controller-manager", "-n=kube-system"),
    ("update", "leases.coordination.k8s.io/someone-else", "-n={namespace}"),
    ("delete", "leases.coordination.k8s.io/pkcs11-issuer", "-n={namespace}"),
    ("create", "serviceaccounts/token", "-n={namespace}"),
    ("impersonate", "serviceaccounts", "-n={namespace}"),
    ("impersonate", "users"),
    ("create", "certificatesigningrequests.certificates.k8s.io"),
    ("create", "validatingwebhookconfigurations.admissionregistration.k8s.io"),
]


def test_the_service_account_has_what_it_needs_and_nothing_else(installed: Installed) -> None:
    def expand(check: tuple[str, ...]) -> list[str]:
        return [
            arg.format(namespace=installed.namespace, workload=installed.workload) for arg in check
        ]

    missing = [" ".join(check) for check in ALLOWED if not installed.can_i(*expand(check))]
    assert not missing, f"the chart's RBAC lacks: {missing}"
    granted = [" ".join(check) for check in REFUSED if installed.can_i(*expand(check))]
    assert not granted, f"the chart's RBAC grants too much: {granted}"


def test_real_requests_outside_its_rights_are_forbidden(installed: Installed) -> None:
    namespace, workload = installed.namespace, installed.workload
    attempts = {
        "create a Pod": (
            "run", "intruder", "--image=busybox", "--restart=Never", f"-n={workload}",
        ),
        "read a ConfigMap": ("get", "configmap", installed.service_account, f"-n={namespace}"),
        "delete a PIN Secret": ("delete", "secret", "main-pin", f"-n={namespace}"),
        "label a CRD": ("label", "crd", f"certificates.{GROUP}", "owned=yes"),
        "delete a namespace": ("delete", "namespace", workload, "--wait=false"),
        "grant itself cluster-admin": (
            "create", "clusterrolebinding", f"escalate-{namespace}", "--clusterrole=cluster-admin",
            f"--serviceaccount={namespace}:{installed.service_account}",
        ),
        "take a Lease elsewhere": ("create", "-n=kube-system", "-f", "-"),
    }  # fmt: skip
    lease = yaml.safe_dump(
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "pkcs11-issuer", "namespace": "kube-system"},
            "spec": {"holderIdentity": POD_NAME},
        }
    )
    for what, args in attempts.items():
        result = installed.as_operator(*args, input=lease if args[-1] == "-" else None)
        assert result.returncode != 0, f"the operator's identity could {what}: {result.stdout}"
        assert "forbidden" in result.stderr.lower(), f"{what}: {result.stderr}"
