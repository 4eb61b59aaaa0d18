"""The Helm chart (charts/pkcs11-issuer) through the real helm binary: render, lint, install.

Used by tests/cluster/test_chart*.py and tests/container/test_pod.py (which runs the pod the
chart renders), through the session fixture `helm` of support/cluster_fixtures.py; helm comes
with the Kubernetes binaries (scripts/k8s-binaries.sh).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pkcs11_issuer.dev.controlplane import ControlPlane, find_repo_root

REPO = find_repo_root()
CHART = REPO / "charts" / "pkcs11-issuer"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
EXAMPLE_VALUES = sorted((REPO / "examples" / "helm").glob("*-values.yaml"))
# Helm's keep annotation, and the labels and annotations by which it adopts existing objects.
KEEP = "helm.sh/resource-policy"
CRD_NAMES = (
    "certificates.pkcs11-issuer.io",
    "issuers.pkcs11-issuer.io",
    "clusterissuers.pkcs11-issuer.io",
)


class HelmError(AssertionError):
    pass


@dataclass
class Helm:
    binary: Path
    home: Path  # helm's cache, config and data directories, away from the user's
    plane: ControlPlane | None = None

    def with_cluster(self, plane: ControlPlane) -> Helm:
        return Helm(self.binary, self.home, plane)

    def run(
        self, *args: str, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = dict(self.plane.environment()) if self.plane else dict(os.environ)
        for name in ("CACHE", "CONFIG", "DATA"):
            env[f"HELM_{name}_HOME"] = str(self.home / name.lower())
        command = [str(self.binary), *args]
        if self.plane is not None:
            command.append(f"--kubeconfig={self.plane.kubeconfig_path}")
        result = subprocess.run(
            command, capture_output=True, text=True, env=env, input=input, check=False
        )
        if check and result.returncode != 0:
            raise HelmError(
                f"helm {' '.join(args)} exited {result.returncode}:\n{result.stderr.strip()}"
            )
        return result

    def template(
        self,
        *,
        values: Sequence[Path] = (),
        sets: Mapping[str, str] | None = None,
        namespace: str = "pkcs11-issuer",
        release: str = "pkcs11-issuer",
        check: bool = True,
    ) -> list[dict[str, Any]]:
        result = self.run(
            "template",
            release,
            str(CHART),
            f"--namespace={namespace}",
            *value_args(values, sets),
            check=check,
        )
        if result.returncode != 0:
            raise HelmError(result.stderr)
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc]

    def install(
        self,
        release: str,
        namespace: str,
        *,
        values: Sequence[Path] = (),
        sets: Mapping[str, str] | None = None,
        upgrade: bool = False,
    ) -> None:
        self.run(
            "upgrade" if upgrade else "install",
            release,
            str(CHART),
            f"--namespace={namespace}",
            *value_args(values, sets),
        )

    def manifest(self, release: str, namespace: str) -> list[dict[str, Any]]:
        text = self.run("get", "manifest", release, f"--namespace={namespace}").stdout
        return [doc for doc in yaml.safe_load_all(text) if doc]


def value_args(values: Iterable[Path], sets: Mapping[str, str] | None) -> list[str]:
    return [f"--values={path}" for path in values] + [
        f"--set={key}={value}" for key, value in (sets or {}).items()
    ]


def find(objects: Iterable[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [
        obj
        for obj in objects
        if obj["kind"] == kind and (name is None or obj["metadata"]["name"] == name)
    ]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def kinds(objects: Iterable[dict[str, Any]]) -> list[str]:
    return sorted(obj["kind"] for obj in objects)


def rendered_config(objects: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The operator configuration the chart renders into its ConfigMap."""
    config_map = find(objects, "ConfigMap")
    data: dict[str, Any] = yaml.safe_load(config_map["data"]["config.yaml"])
    return data


def adopt_crds(plane: ControlPlane, release: str, namespace: str) -> None:
    """Let release `release` take over CRDs installed earlier (kubectl apply, a previous release
    that kept them): what docs/deploy.md tells users to run before `helm install`."""
    for name in CRD_NAMES:
        if plane.kubectl("get", "crd", name, check=False).returncode != 0:
            continue
        plane.kubectl("label", "--overwrite", "crd", name, "app.kubernetes.io/managed-by=Helm")
        plane.kubectl(
            "annotate",
            "--overwrite",
            "crd",
            name,
            f"meta.helm.sh/release-name={release}",
            f"meta.helm.sh/release-namespace={namespace}",
        )
