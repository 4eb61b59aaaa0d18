"""The local control plane is a real Kubernetes: API machinery, controllers and RBAC all act."""

from __future__ import annotations

import itertools
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pkcs11_issuer.dev.controlplane import Binaries, ControlPlane

GROUP = "test.pkcs11-issuer.io"
WIDGETS = f"widgets.{GROUP}"


def eventually(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout:.0f}s: {what}")
        time.sleep(0.25)


def apply(plane: ControlPlane, manifest: dict[str, Any]) -> None:
    plane.kubectl("apply", "-f", "-", input=json.dumps(manifest))


def get(plane: ControlPlane, *args: str) -> dict[str, Any] | None:
    """The object as JSON, or None when the API server says it does not exist."""
    result = plane.kubectl("get", *args, "-o", "json", "--ignore-not-found")
    return json.loads(result.stdout) if result.stdout.strip() else None


def test_server_reports_the_kubernetes_version_it_was_built_from(
    control_plane: ControlPlane, cluster_binaries: Binaries
) -> None:
    versions = json.loads(control_plane.kubectl("version", "-o", "json").stdout)
    # The cache is keyed by version: .cache/k8s/<version>/bin/kube-apiserver.
    built = cluster_binaries.kube_apiserver.parents[1].name
    assert built.startswith("v1.33.")
    assert versions["serverVersion"]["gitVersion"] == built
    assert versions["serverVersion"]["minor"] == "33"
    assert versions["clientVersion"]["gitVersion"] == built


@pytest.fixture
def widget_crd(control_plane: ControlPlane) -> Iterator[str]:
    apply(
        control_plane,
        {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": WIDGETS},
            "spec": {
                "group": GROUP,
                "scope": "Namespaced",
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                "versions": [
                    {
                        "name": "v1",
                        "served": True,
                        "storage": True,
                        "schema": {
                            "openAPIV3Schema": {
                                "type": "object",
                                "properties": {
                                    "spec": {
                                        "type": "object",
                                        "properties": {"size": {"type": "integer"}},
                                    }
                                },
                            }
                        },
                    }
                ],
            },
        },
    )
    control_plane.kubectl("wait", "--for=condition=Established", f"crd/{WIDGETS}", "--timeout=60s")
    yield WIDGETS
    control_plane.kubectl("delete", "crd", WIDGETS, "--wait=false")


def test_custom_resources_are_validated_stored_and_watched(
    control_plane: ControlPlane, namespace: str, widget_crd: str
) -> None:
    events = control_plane.watch(f"/apis/{GROUP}/v1/namespaces/{namespace}/widgets")
    widget = {
        "apiVersion": f"{GROUP}/v1",
        "kind": "Widget",
        "metadata": {"name": "gear", "namespace": namespace},
        "spec": {"size": 1},
    }
    apply(control_plane, widget)
    control_plane.kubectl(
        "patch", widget_crd, "gear", "-n", namespace, "--type=merge", "-p", '{"spec":{"size":2}}'
    )
    control_plane.kubectl("delete", widget_crd, "gear", "-n", namespace)

    seen = [(event["type"], event["object"]) for event in itertools.islice(events, 3)]
    events.close()
    assert [kind for kind, _ in seen] == ["ADDED", "MODIFIED", "DELETED"]
    assert {obj["metadata"]["name"] for _, obj in seen} == {"gear"}
    assert [obj["spec"]["size"] for _, obj in seen] == [1, 2, 2]

    # The schema is enforced by the API server, not by the client.
    invalid = control_plane.kubectl(
        "apply", "-f", "-", input=json.dumps({**widget, "spec": {"size": "big"}}), check=False
    )
    assert invalid.returncode != 0
    assert "spec.size" in invalid.stderr
    assert get(control_plane, widget_crd, "gear", "-n", namespace) is None


def configmap(name: str, namespace: str, owner: dict[str, Any] | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if owner is not None:
        metadata["ownerReferences"] = [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"],
            }
        ]
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": {"k": "v"}}


def test_garbage_collector_cascades_and_orphans(
    control_plane: ControlPlane, namespace: str
) -> None:
    for owner_name in ("owner", "parent"):
        apply(control_plane, configmap(owner_name, namespace))
    owner = get(control_plane, "configmap", "owner", "-n", namespace)
    parent = get(control_plane, "configmap", "parent", "-n", namespace)
    assert owner is not None
    assert parent is not None
    apply(control_plane, configmap("dependent", namespace, owner))
    apply(control_plane, configmap("child", namespace, parent))

    control_plane.kubectl("delete", "configmap", "owner", "-n", namespace)
    eventually(
        "the garbage collector deletes the owner's dependent",
        lambda: get(control_plane, "configmap", "dependent", "-n", namespace) is None,
    )

    control_plane.kubectl("delete", "configmap", "parent", "-n", namespace, "--cascade=orphan")

    def orphaned() -> bool:
        child = get(control_plane, "configmap", "child", "-n", namespace)
        assert child is not None, "an orphaned dependent must survive"
        return not child["metadata"].get("ownerReferences")

    eventually("the garbage collector orphans the dependent", orphaned)


def test_namespaces_get_service_accounts_and_are_emptied_on_delete(
    control_plane: ControlPlane, namespace: str
) -> None:
    eventually(
        "the ServiceAccount controller creates `default`",
        lambda: get(control_plane, "serviceaccount", "default", "-n", namespace) is not None,
    )
    eventually(
        "the root CA publisher creates kube-root-ca.crt",
        lambda: get(control_plane, "configmap", "kube-root-ca.crt", "-n", namespace) is not None,
    )
    apply(control_plane, configmap("content", namespace))

    control_plane.kubectl("delete", "namespace", namespace, "--timeout=90s")

    assert get(control_plane, "namespace", namespace) is None


def test_service_account_token_is_held_to_its_role(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    control_plane.kubectl("create", "serviceaccount", "reader", "-n", namespace)
    control_plane.kubectl(
        "create", "role", "configmap-reader", "-n", namespace,
        "--verb=get,list", "--resource=configmaps",
    )  # fmt: skip
    control_plane.kubectl(
        "create", "rolebinding", "reader", "-n", namespace,
        "--role=configmap-reader", f"--serviceaccount={namespace}:reader",
    )  # fmt: skip
    apply(control_plane, configmap("visible", namespace))
    kubeconfig = control_plane.service_account_kubeconfig(
        namespace, "reader", tmp_path / "reader.kubeconfig"
    )

    def as_reader(*args: str) -> subprocess.CompletedProcess[str]:
        return control_plane.kubectl(*args, kubeconfig=kubeconfig, check=False)

    whoami = json.loads(as_reader("auth", "whoami", "-o", "json").stdout)
    assert whoami["status"]["userInfo"]["username"] == f"system:serviceaccount:{namespace}:reader"

    allowed = as_reader("get", "configmap", "visible", "-n", namespace, "-o", "name")
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout.strip() == "configmap/visible"

    refused = {
        "create a ConfigMap": as_reader("create", "configmap", "new", "-n", namespace),
        "read Secrets": as_reader("get", "secrets", "-n", namespace),
        "read ConfigMaps elsewhere": as_reader("get", "configmaps", "-n", "default"),
    }
    for what, result in refused.items():
        assert result.returncode != 0, f"allowed to {what}"
        assert "forbidden" in result.stderr.lower(), f"{what}: {result.stderr}"
    assert get(control_plane, "configmap", "new", "-n", namespace) is None


def test_helm_talks_to_the_cluster(control_plane: ControlPlane, namespace: str) -> None:
    helm = str(control_plane.binaries.helm)
    version = subprocess.run(
        [helm, "version", "--short"], capture_output=True, text=True, check=True
    ).stdout
    assert version.startswith("v3.")
    releases = subprocess.run(
        [helm, "list", "-n", namespace, "-o", "json"],
        capture_output=True,
        text=True,
        check=True,
        env=control_plane.environment(),
    ).stdout
    assert json.loads(releases) == []
