"""support/pod_spec.py, the translation of the chart's pod spec into `podman run` arguments that
tests/container/test_pod.py relies on: what it translates, and that it refuses what it does not."""

from __future__ import annotations

import base64
import copy
import json
import stat
from pathlib import Path
from typing import Any

import pytest

from support.pod_spec import Container, UnsupportedPodSpec, quantity_bytes, translate_pod

FIELDS = {"metadata.name": "pod-1", "metadata.namespace": "ops"}
SECRET = {
    "apiVersion": "v1",
    "kind": "Secret",
    "metadata": {"name": "pins", "namespace": "ops"},
    "data": {key: base64.b64encode(value).decode() for key, value in {"pin": b"1234"}.items()},
    "stringData": {"so-pin": "5678"},
}
CONFIG_MAP = {
    "apiVersion": "v1",
    "kind": "ConfigMap",
    "metadata": {"name": "config", "namespace": "ops"},
    "data": {"config.yaml": "tokens: []\n", "other.yaml": "x: 1\n"},
}
SPEC: dict[str, Any] = {
    "serviceAccountName": "issuer",
    "securityContext": {
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "runAsNonRoot": True,
        "fsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    },
    "containers": [
        {
            "name": "main",
            "image": "localhost/main:dev",
            "imagePullPolicy": "IfNotPresent",
            "args": ["--config=/etc/app/config.yaml"],
            "env": [
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "MODE", "value": "test"},
            ],
            "securityContext": {
                "readOnlyRootFilesystem": True,
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
            },
            "resources": {"requests": {"cpu": "10m"}, "limits": {"memory": "64Mi"}},
            "volumeMounts": [
                {"name": "config", "mountPath": "/etc/app", "readOnly": True},
                {"name": "shared", "mountPath": "/run/shared"},
                {"name": "shared", "mountPath": "/var/cache/app", "subPath": "cache"},
            ],
        },
        {
            "name": "side",
            "image": "localhost/side:dev",
            "command": ["/bin/side", "serve"],
            "securityContext": {"runAsUser": 1000},
            "volumeMounts": [
                {"name": "shared", "mountPath": "/run/shared", "readOnly": True},
                {"name": "pins", "mountPath": "/etc/pins"},
            ],
        },
    ],
    "volumes": [
        {"name": "config", "configMap": {"name": "config"}},
        {"name": "shared", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
        {
            "name": "pins",
            "secret": {
                "secretName": "pins",
                "defaultMode": 0o440,
                "items": [{"key": "pin", "path": "pin"}, {"key": "so-pin", "path": "so/pin"}],
            },
        },
    ],
}


def _translate(spec: dict[str, Any], tmp_path: Path) -> list[Container]:
    return translate_pod(
        spec,
        objects=[SECRET, CONFIG_MAP],
        root=tmp_path / "volumes",
        field_values=FIELDS,
        owner=None,
    )


def test_a_pod_spec_becomes_podman_arguments(tmp_path: Path) -> None:
    main, side = _translate(SPEC, tmp_path)
    volumes = tmp_path / "volumes"

    assert (main.name, main.image) == ("main", "localhost/main:dev")
    assert main.env == {"POD_NAME": "pod-1", "MODE": "test"}
    assert main.args == ["--config=/etc/app/config.yaml"]
    assert main.options == [
        "--user=65532:65532",
        "--group-add=65532",
        "--read-only",
        "--read-only-tmpfs=false",
        "--security-opt=no-new-privileges",
        "--cap-drop=ALL",
        f"--memory={64 * 1024**2}",
        f"--memory-swap={64 * 1024**2}",
    ]
    assert [mount.volume() for mount in main.mounts] == [
        (volumes / "config", "/etc/app", "ro"),
        (volumes / "shared", "/run/shared", ""),
        (volumes / "shared" / "cache", "/var/cache/app", ""),
    ]
    assert (volumes / "config" / "config.yaml").read_text() == "tokens: []\n"
    assert (volumes / "shared" / "cache").is_dir()

    # The container's own runAsUser wins over the pod's; the pod's runAsGroup still applies.
    assert side.options[:2] == ["--user=1000:65532", "--group-add=65532"]
    assert side.options[-1] == f"--entrypoint={json.dumps(['/bin/side', 'serve'])}"
    assert side.args == []
    # One emptyDir, shared; the Secret read-only whatever the mount says, as the kubelet does.
    assert [mount.volume() for mount in side.mounts] == [
        (volumes / "shared", "/run/shared", "ro"),
        (volumes / "pins", "/etc/pins", "ro"),
    ]
    assert side.host_path("/etc/pins/so/pin") == volumes / "pins" / "so" / "pin"
    assert (volumes / "pins" / "pin").read_bytes() == b"1234"
    assert (volumes / "pins" / "so" / "pin").read_bytes() == b"5678"
    assert stat.S_IMODE((volumes / "pins" / "pin").stat().st_mode) == 0o440
    assert not (volumes / "pins" / "so-pin").exists()


def _changed(path: str, value: Any) -> dict[str, Any]:
    """SPEC with the value at a dotted path (list indexes as numbers) replaced."""
    spec = copy.deepcopy(SPEC)
    *parents, last = path.split(".")
    node: Any = spec
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    node[int(last) if last.isdigit() else last] = value
    return spec


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("hostNetwork", True, "pod spec: hostNetwork"),
        ("securityContext.supplementalGroups", [1], "supplementalGroups"),
        ("containers.0.workingDir", "/srv", "container main: workingDir"),
        ("containers.0.envFrom", [{"secretRef": {"name": "pins"}}], "envFrom"),
        ("containers.0.securityContext.privileged", False, "privileged"),
        ("containers.0.securityContext.seccompProfile", {"type": "Localhost"}, "seccomp"),
        ("containers.0.resources.limits.cpu", "1", "resources.limits: cpu"),
        ("containers.0.args", ["--name=$(POD_NAME)"], "expansion"),
        (
            "containers.0.env.1",
            {"name": "PIN", "valueFrom": {"secretKeyRef": {"name": "pins", "key": "pin"}}},
            "env PIN",
        ),
        (
            "containers.0.env.0.valueFrom.fieldRef.fieldPath",
            "spec.nodeName",
            "spec.nodeName",
        ),
        ("containers.0.volumeMounts.1.mountPropagation", "HostToContainer", "mountPropagation"),
        ("containers.0.volumeMounts.1.name", "missing", "volume 'missing'"),
        ("volumes.1", {"name": "shared", "hostPath": {"path": "/run"}}, "hostPath"),
        ("volumes.1.emptyDir.medium", "HugePages", "medium"),
        ("volumes.2.secret.secretName", "absent", "no Secret absent"),
        ("volumes.2.secret.items.0.key", "absent", "no key absent"),
        ("volumes.0.configMap.items", [{"key": "config.yaml", "path": "../x"}], "item path"),
    ],
)
def test_what_is_not_translated_is_refused(
    tmp_path: Path, path: str, value: Any, message: str
) -> None:
    with pytest.raises(UnsupportedPodSpec, match=message):
        _translate(_changed(path, value), tmp_path)


def test_an_unmounted_volume_is_translated_too(tmp_path: Path) -> None:
    spec = copy.deepcopy(SPEC)
    spec["volumes"].append({"name": "unused", "nfs": {"server": "nas", "path": "/"}})
    with pytest.raises(UnsupportedPodSpec, match="nfs"):
        _translate(spec, tmp_path)


def test_memory_quantities() -> None:
    assert quantity_bytes("512Mi") == 512 * 1024**2
    assert quantity_bytes("1G") == 10**9
    assert quantity_bytes(4096) == 4096
    with pytest.raises(UnsupportedPodSpec):
        quantity_bytes("0.5Gi")
