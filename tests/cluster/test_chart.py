"""The Helm chart, rendered and installed with the real helm on the real control plane.

- `helm lint --strict` with the defaults, each ci/ values file and each examples/helm file;
- the rendered operator configuration is accepted by `OperatorConfig.from_dict` in every mode,
  and the vendor examples' values render their example's configuration;
- what the templates decide: leader election, CRD keep, config checksum, checks on values;
- every mode's manifests pass `kubectl apply --dry-run=server`;
- `helm install`, `upgrade` and `uninstall`: objects as rendered, PIN kept, CRDs kept.

RBAC with a real ServiceAccount token is in test_chart_rbac.py.
"""

from __future__ import annotations

import base64
import secrets
from pathlib import Path
from typing import Any

import pytest
import yaml

from pkcs11_issuer.config import OperatorConfig
from pkcs11_issuer.dev.controlplane import ControlPlane
from support.helm import (
    CHART,
    CI_VALUES,
    CRD_NAMES,
    EXAMPLE_VALUES,
    KEEP,
    REPO,
    Helm,
    HelmError,
    adopt_crds,
    find,
    kinds,
    rendered_config,
)

ALL_VALUES = [None, *CI_VALUES, *EXAMPLE_VALUES]


def _id(values: Path | None) -> str:
    return "defaults" if values is None else values.name.removesuffix("-values.yaml")


def _values(values: Path | None) -> list[Path]:
    return [] if values is None else [values]


# ----------------------------------------------------------------------------- lint, render


@pytest.mark.parametrize("values", ALL_VALUES, ids=_id)
def test_helm_lint_strict(helm: Helm, values: Path | None) -> None:
    args = [f"--values={values}"] if values else []
    result = helm.run("lint", "--strict", str(CHART), *args)
    assert "0 chart(s) failed" in result.stdout, result.stdout


@pytest.mark.parametrize("values", ALL_VALUES, ids=_id)
def test_the_rendered_configuration_is_accepted_by_the_operator(
    helm: Helm, values: Path | None
) -> None:
    objects = helm.template(values=_values(values), namespace="issuer-system")
    config = OperatorConfig.from_dict(rendered_config(objects), source=_id(values))
    assert config.tokens, "every mode's values configure at least one token"
    assert all(token.module in config.modules for token in config.tokens)
    mode = yaml.safe_load(values.read_text())["hsm"]["mode"] if values else "softhsm"
    deployment = find(objects, "Deployment")
    env = {
        item["name"]: item.get("value")
        for container in deployment["spec"]["template"]["spec"]["containers"]
        for item in container.get("env") or ()
    }
    if mode in {"softhsm", "p11kitRemote"}:
        assert config.modules == {"p11kit": "/usr/lib/pkcs11-issuer/p11-kit-client.so"}
        assert env["P11_KIT_SERVER_ADDRESS"].startswith("unix:path=/run/")
    else:
        assert "p11kit" not in config.modules
        assert "P11_KIT_SERVER_ADDRESS" not in env
    if config.cluster_resource_namespace == "issuer-system":
        for token in config.tokens:
            if token.pin.secret_name and token.name == "softhsm":
                assert token.pin.secret_namespace == "issuer-system"


def test_the_default_install_serves_the_softhsm_quickstart(helm: Helm) -> None:
    objects = helm.template(namespace="pkcs11-issuer", release="pkcs11-issuer")
    config = OperatorConfig.from_dict(rendered_config(objects))
    (token,) = config.tokens
    assert token.uri.format() == "pkcs11:token=dev-issuer"  # examples/softhsm/quickstart.yaml
    assert [grant.namespaces for grant in token.grants] == [("*",)]
    assert (token.pin.secret_namespace, token.pin.secret_name, token.pin.secret_key) == (
        "pkcs11-issuer",
        "pkcs11-issuer-softhsm-pin",
        "pin",
    )
    assert config.cluster_resource_namespace == "pkcs11-issuer"
    assert config.leader_election is None
    pin = find(objects, "Secret", "pkcs11-issuer-softhsm-pin")
    assert len(base64.b64decode(pin["data"]["pin"])) == 32
    pod = find(objects, "Deployment")["spec"]["template"]["spec"]
    sidecar = next(c for c in pod["containers"] if c["name"] == "softhsm")
    env = {item["name"]: item["value"] for item in sidecar["env"]}
    assert env == {
        "SOFTHSM_TOKEN_LABEL": "dev-issuer",
        "SOFTHSM_PIN_FILE": "/etc/softhsm-pin/pin",
        "SOFTHSM_SO_PIN_FILE": "/etc/softhsm-pin/so-pin",
        "SOFTHSM_TOKEN_DIR": "/var/lib/softhsm/tokens",
        "P11_KIT_SOCKET": "/run/p11-kit/pkcs11.sock",
    }
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert "emptyDir" in volumes["softhsm-tokens"]
    assert volumes["softhsm-pin"]["secret"]["secretName"] == "pkcs11-issuer-softhsm-pin"


@pytest.mark.parametrize("example", ["aws-cloudhsm", "aws-kms"])
def test_vendor_example_values_render_the_example_configuration(helm: Helm, example: str) -> None:
    """examples/helm/<example>-values.yaml renders what examples/<example>/operator-config.yaml
    says (the chart's namespace being the configuration's default, pkcs11-issuer)."""
    objects = helm.template(
        values=[REPO / "examples" / "helm" / f"{example}-values.yaml"], namespace="pkcs11-issuer"
    )
    rendered = OperatorConfig.from_dict(rendered_config(objects), source="rendered")
    expected = OperatorConfig.load(REPO / "examples" / example / "operator-config.yaml")
    assert rendered.modules == expected.modules
    assert rendered.tokens == expected.tokens
    assert rendered.cluster_resource_namespace == expected.cluster_resource_namespace


def test_more_than_one_replica_turns_leader_election_on(helm: Helm) -> None:
    single = helm.template(values=[CHART / "ci" / "module-values.yaml"], namespace="ops")
    assert "leaderElection" not in rendered_config(single)
    assert "Role" not in kinds(single) and "RoleBinding" not in kinds(single)
    assert find(single, "Deployment")["spec"]["strategy"]["type"] == "Recreate"

    objects = helm.template(
        values=[CHART / "ci" / "module-values.yaml"], sets={"replicaCount": "3"}, namespace="ops"
    )
    config = OperatorConfig.from_dict(rendered_config(objects))
    assert config.leader_election is not None
    assert (config.leader_election.namespace, config.leader_election.lease_name) == (
        "ops",
        "pkcs11-issuer",
    )
    assert (
        config.leader_election.lease_duration,
        config.leader_election.renew_deadline,
        config.leader_election.retry_period,
    ) == (15.0, 10.0, 2.0)
    deployment = find(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    role = find(objects, "Role")
    assert role["metadata"]["namespace"] == "ops"
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["pkcs11-issuer"],
            "verbs": ["get", "update"],
        },
    ]
    env = {
        item["name"]: item.get("valueFrom")
        for item in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}

    explicit = helm.template(sets={"leaderElection.enabled": "true"})
    assert rendered_config(explicit)["leaderElection"]["enabled"] is True


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        ({"replicaCount": "2"}, "hsm.mode=softhsm runs one SoftHSM token per Pod"),
        (
            {"hsm.mode": "module", "module.modules.x": "/x.so", "replicaCount": "2"}
            | {"leaderElection.enabled": "false"},
            "replicaCount > 1 needs leader election",
        ),
        ({"hsm.mode": "module"}, "hsm.mode=module needs module.modules"),
        ({"hsm.mode": "hardware"}, "value must be one of 'softhsm', 'module', 'p11kitRemote'"),
        ({"hsm.mod": "module"}, "additional properties 'mod' not allowed"),
        ({"softhsm.tokenLabel": "has space"}, "/softhsm/tokenLabel"),
        ({"config.concurrency": "0"}, "/config/concurrency"),
        ({"config.loginRetryInterval": "5 minutes"}, "/config/loginRetryInterval"),
        ({"metrics.port": "8081"}, "metrics.port and health.port must differ"),
        (
            {"config.tokens[0].name": "x", "config.tokens[0].uri": "pkcs11:token=x"},
            "missing property 'pin'",
        ),
    ],
)
def test_values_that_cannot_work_are_refused(
    helm: Helm, sets: dict[str, str], message: str
) -> None:
    with pytest.raises(HelmError) as refused:
        helm.template(sets=sets)
    assert message in str(refused.value)


def test_crds_are_rendered_from_the_copies_and_kept(helm: Helm) -> None:
    objects = helm.template()
    crds = {
        obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == "CustomResourceDefinition"
    }
    assert sorted(crds) == sorted(CRD_NAMES)
    for path in sorted((REPO / "crds").glob("*.yaml")):
        source = yaml.safe_load(path.read_text())
        crd = crds[source["metadata"]["name"]]
        assert crd["metadata"]["annotations"] == {KEEP: "keep"}
        assert crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        # Through fromYaml and toYaml, nothing but the metadata added may change.
        assert {**crd, "metadata": source["metadata"]} == source, path.name

    unkept = helm.template(sets={"crds.keep": "false"})
    for obj in unkept:
        if obj["kind"] == "CustomResourceDefinition":
            assert KEEP not in (obj["metadata"].get("annotations") or {})
    assert "CustomResourceDefinition" not in kinds(helm.template(sets={"crds.enabled": "false"}))


def test_a_configuration_change_restarts_the_pods_and_nothing_else_does(helm: Helm) -> None:
    def checksum(sets: dict[str, str]) -> str:
        deployment = find(helm.template(sets=sets), "Deployment")
        value: str = deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        return value

    base = checksum({})
    assert checksum({"podLabels.team": "pki"}) == base
    assert checksum({"config.concurrency": "8"}) != base
    assert checksum({"softhsm.grants[0].namespaces[0]": "team-a"}) != base


def test_pods_run_locked_down(helm: Helm) -> None:
    for values in ALL_VALUES:
        pod = find(helm.template(values=_values(values)), "Deployment")["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 65532
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, container["name"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert container["resources"]["limits"]["memory"]
        operator = pod["containers"][0]
        assert operator["name"] == "operator"
        assert operator["args"][0] == "--config=/etc/pkcs11-issuer/config.yaml"
        assert operator["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
        assert operator["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
        ports = {port["name"]: port["containerPort"] for port in operator["ports"]}
        assert ports == {"metrics": 9402, "health": 8081}


def test_the_metrics_service_and_the_optional_service_monitor(helm: Helm) -> None:
    objects = helm.template()
    service = find(objects, "Service")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9402, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert "ServiceMonitor" not in kinds(objects)
    monitored = helm.template(
        sets={
            "metrics.serviceMonitor.enabled": "true",
            "metrics.serviceMonitor.labels.release": "kps",
        }
    )
    monitor = find(monitored, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kps"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    silent = helm.template(sets={"metrics.port": "0", "metrics.serviceMonitor.enabled": "true"})
    assert "Service" not in kinds(silent) and "ServiceMonitor" not in kinds(silent)
    assert rendered_config(silent)["metrics"] == {"port": 0}


def test_an_existing_pin_secret_and_claim_are_used_as_given(helm: Helm) -> None:
    objects = helm.template(values=[CHART / "ci" / "softhsm-persistent-values.yaml"])
    assert "Secret" not in kinds(objects)
    pod = find(objects, "Deployment")["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["softhsm-tokens"] == {
        "name": "softhsm-tokens",
        "persistentVolumeClaim": {"claimName": "softhsm-tokens"},
    }
    assert volumes["softhsm-pin"]["secret"]["items"] == [
        {"key": "user-pin", "path": "pin"},
        {"key": "so-pin", "path": "so-pin"},
    ]
    no_so_pin = helm.template(sets={"softhsm.pin.existingSecret": "mine"})
    sidecar = find(no_so_pin, "Deployment")["spec"]["template"]["spec"]["containers"][1]
    assert "SOFTHSM_SO_PIN_FILE" not in {item["name"] for item in sidecar["env"]}


# ----------------------------------------------------------------------------- the API server


@pytest.mark.parametrize("values", ALL_VALUES, ids=_id)
def test_every_mode_passes_server_side_dry_run(
    helm: Helm, control_plane: ControlPlane, namespace: str, values: Path | None
) -> None:
    objects = helm.template(values=_values(values), namespace=namespace, release="dry")
    result = control_plane.kubectl(
        "apply",
        "--dry-run=server",
        "--validate=strict",
        "-f",
        "-",
        input=yaml.safe_dump_all(objects),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("(server dry run)") == len(objects), result.stdout


def _path(obj: dict[str, Any]) -> str:
    group, _, version = obj["apiVersion"].rpartition("/")
    base = f"/apis/{group}/{version}" if group else f"/api/{version}"
    plural = {
        "ConfigMap": "configmaps",
        "Secret": "secrets",
        "ServiceAccount": "serviceaccounts",
        "Service": "services",
        "Deployment": "deployments",
        "Role": "roles",
        "RoleBinding": "rolebindings",
        "ClusterRole": "clusterroles",
        "ClusterRoleBinding": "clusterrolebindings",
        "CustomResourceDefinition": "customresourcedefinitions",
    }[obj["kind"]]
    metadata = obj["metadata"]
    scope = f"/namespaces/{metadata['namespace']}" if metadata.get("namespace") else ""
    return f"{base}{scope}/{plural}/{metadata['name']}"


def _missing(rendered: Any, live: Any, where: str = "") -> list[str]:
    """Where `live` lacks or contradicts what `rendered` says (server defaults may add)."""
    if isinstance(rendered, dict):
        if not isinstance(live, dict):
            return [f"{where}: {live!r}"]
        return [
            problem
            for key, value in rendered.items()
            for problem in _missing(value, live.get(key), f"{where}.{key}")
        ]
    if isinstance(rendered, list):
        if not isinstance(live, list) or len(live) != len(rendered):
            return [f"{where}: {live!r}"]
        return [
            problem
            for index, (mine, theirs) in enumerate(zip(rendered, live, strict=True))
            for problem in _missing(mine, theirs, f"{where}[{index}]")
        ]
    return [] if rendered == live else [f"{where}: rendered {rendered!r}, live {live!r}"]


def test_install_upgrade_and_uninstall(
    helm: Helm, control_plane: ControlPlane, namespace: str
) -> None:
    helm = helm.with_cluster(control_plane)
    release = f"chart-{secrets.token_hex(3)}"
    adopt_crds(control_plane, release, namespace)
    helm.install(release, namespace, sets={"leaderElection.enabled": "true"})

    manifest = helm.manifest(release, namespace)
    assert kinds(manifest) == sorted(
        ["ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment", "Role", "RoleBinding"]
        + ["Secret", "Service", "ServiceAccount"]
        + ["CustomResourceDefinition"] * 3
    )
    for obj in manifest:
        status, live = control_plane.request("GET", _path(obj))
        assert status == 200, f"{obj['kind']} {obj['metadata']['name']}: HTTP {status}"
        problems = _missing({k: v for k, v in obj.items() if k != "status"}, live)
        assert not problems, f"{obj['kind']} {obj['metadata']['name']} differs: {problems}"
        if obj["kind"] == "CustomResourceDefinition":
            assert live["metadata"]["annotations"][KEEP] == "keep"

    pin_path = f"/api/v1/namespaces/{namespace}/secrets/{release}-pkcs11-issuer-softhsm-pin"
    pin_before = control_plane.request("GET", pin_path)[1]["data"]
    deployment_path = _path(find(manifest, "Deployment"))
    checksum_before = control_plane.request("GET", deployment_path)[1]["spec"]["template"][
        "metadata"
    ]["annotations"]["checksum/config"]

    helm.install(
        release,
        namespace,
        sets={"leaderElection.enabled": "true", "config.concurrency": "8"},
        upgrade=True,
    )
    assert control_plane.request("GET", pin_path)[1]["data"] == pin_before, (
        "an upgrade must keep the SoftHSM PINs: the token was initialised with them"
    )
    config_map = control_plane.request("GET", _path(find(manifest, "ConfigMap")))[1]
    assert yaml.safe_load(config_map["data"]["config.yaml"])["concurrency"] == 8
    checksum_after = control_plane.request("GET", deployment_path)[1]["spec"]["template"][
        "metadata"
    ]["annotations"]["checksum/config"]
    assert checksum_after != checksum_before

    result = helm.run("uninstall", release, f"--namespace={namespace}", "--wait")
    assert "kept due to the resource policy" in result.stdout + result.stderr, result.stdout
    for obj in manifest:
        status, _ = control_plane.request("GET", _path(obj))
        if obj["kind"] == "CustomResourceDefinition":
            assert status == 200, f"helm uninstall deleted CRD {obj['metadata']['name']}"
        else:
            assert status == 404, f"{obj['kind']} {obj['metadata']['name']} outlived uninstall"
