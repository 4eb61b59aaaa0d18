"""The Helm chart's SoftHSM mode on a kind cluster, with the images built from the Dockerfile.

Run by scripts/e2e-kind.sh (`make e2e-kind`), which creates the cluster, loads the images,
installs the chart and sets the E2E_* variables; never collected by `make test` (see
tests/conftest.py). The checks are the podman test's (support/e2e_checks.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from support.e2e_checks import Kubectl, check_quickstart, kubectl_for_kubeconfig

NONROOT = "65532"


@pytest.fixture
def kubectl() -> Kubectl:
    kubeconfig = os.environ.get("E2E_KUBECONFIG")
    if not kubeconfig:
        pytest.skip("run by scripts/e2e-kind.sh (make e2e-kind), which sets E2E_KUBECONFIG")
    return kubectl_for_kubeconfig(Path(kubeconfig), os.environ.get("E2E_KUBECTL", "kubectl"))


def _release() -> tuple[str, str]:
    return (
        os.environ.get("E2E_RELEASE", "pkcs11-issuer"),
        os.environ.get("E2E_RELEASE_NAMESPACE", "pkcs11-issuer"),
    )


def _logs(kubectl: Kubectl) -> str:
    release, namespace = _release()
    try:
        return "--- operator Pod logs:\n" + kubectl(
            "logs",
            f"--namespace={namespace}",
            f"--selector=app.kubernetes.io/instance={release}",
            "--all-containers",
            "--prefix",
            "--tail=80",
        )
    except AssertionError as error:
        return f"(no logs: {error})"


def test_the_quick_start_on_kind(kubectl: Kubectl, tmp_path: Path) -> None:
    release, release_namespace = _release()
    pods = json.loads(
        kubectl(
            "get",
            "pods",
            f"--namespace={release_namespace}",
            f"--selector=app.kubernetes.io/instance={release}",
            "-o=json",
        )
    )["items"]
    assert pods, f"no Pods of release {release} in {release_namespace}"
    for pod in pods:
        name = pod["metadata"]["name"]
        statuses = {s["name"]: s for s in pod["status"].get("containerStatuses") or ()}
        assert {"operator", "softhsm"} <= statuses.keys(), statuses.keys()
        assert all(s["ready"] for s in statuses.values()), (statuses, _logs(kubectl))
        for container in statuses:
            uid = kubectl(
                "exec", f"--namespace={release_namespace}", name, "-c", container, "--", "id", "-u"
            )
            assert uid.strip() == NONROOT, (name, container, uid)

    namespace = os.environ.get("E2E_NAMESPACE", "demo")
    kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
        ),
    )
    check_quickstart(kubectl, namespace, tmp_path, diagnostics=lambda: _logs(kubectl))
