"""The operator, running as its own process against the real control plane and SoftHSM.

Each test module that uses `operator` gets its own operator process (so a test may SIGKILL or
restart it) with a configuration of three tokens on the session's SoftHSM:

- `main` (label operator-main): every namespace may use it;
- `restricted` (label operator-restricted): only namespaces named `granted-*` may;
- `guarded` (label operator-guarded) through pkcs11-spy, with a wrong PIN in its Secret, so
  login attempts can be counted in the spy's log;
- `sidecar` (label operator-sidecar) through p11-kit-client and a `p11-kit server` the test
  can stop and start, as the chart's SoftHSM sidecar;
- the tokens of the AWS CloudHSM and aws-kms-pkcs11 examples, read from their example
  configurations, with SoftHSM standing in for the vendor module.

The test process inspects the same tokens through its own session (`Harness.keys`).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from pkcs11_issuer.dev.controlplane import ControlPlane, find_repo_root, free_ports
from pkcs11_issuer.dev.operator import OperatorProcess, install_crds
from pkcs11_issuer.dev.p11kit import P11KitServer, p11kit_client_module
from pkcs11_issuer.dev.softhsm import SoftHsm, softhsm_module
from pkcs11_issuer.hsm import KeyRef, ModuleAllowlist, Pin, Token, TokenSelector
from pkcs11_issuer.uri import Pkcs11Uri
from support.hsm_fixtures import (
    CLOUDHSM_PIN,
    OPERATOR_GUARDED,
    OPERATOR_MAIN,
    OPERATOR_RESTRICTED,
    OPERATOR_SIDECAR,
    OPERATOR_TOKENS,
    TEST_PIN,
)
from support.waiting import wait_until

OPERATOR_NAMESPACE = "pkcs11-issuer"
GROUP_PATH = "/apis/pkcs11-issuer.io/v1alpha1"
MAIN_LABEL = OPERATOR_MAIN
RESTRICTED_LABEL = OPERATOR_RESTRICTED
GUARDED_LABEL = OPERATOR_GUARDED
SIDECAR_LABEL = OPERATOR_SIDECAR
SPY_MODULE = "/usr/lib/x86_64-linux-gnu/pkcs11/pkcs11-spy.so"
PLURALS = {"Certificate": "certificates", "Issuer": "issuers", "ClusterIssuer": "clusterissuers"}


def resource_path(kind: str, namespace: str | None, name: str | None = None) -> str:
    scope = f"/namespaces/{namespace}" if namespace else ""
    return f"{GROUP_PATH}{scope}/{PLURALS[kind]}" + (f"/{name}" if name else "")


def condition(body: dict[str, Any] | None, type_: str = "Ready") -> dict[str, Any]:
    for entry in ((body or {}).get("status") or {}).get("conditions") or ():
        if entry.get("type") == type_:
            return dict(entry)
    return {}


def secret_text(secret: dict[str, Any], field: str) -> str:
    return base64.b64decode(secret["data"][field]).decode()


@dataclass
class Harness:
    plane: ControlPlane
    process: OperatorProcess
    softhsm: SoftHsm
    work: Path
    spy_log: Path
    sidecar: P11KitServer
    wrong_pin: str  # what the `guarded` token's Secret holds
    _tokens: dict[str, Token] = field(default_factory=dict)
    modules: ModuleAllowlist = field(
        default_factory=lambda: ModuleAllowlist({"softhsm": softhsm_module() or ""})
    )

    def apply(
        self, manifest: str | dict[str, Any] | list[dict[str, Any]], namespace: str | None = None
    ) -> None:
        text = (
            manifest
            if isinstance(manifest, str)
            else yaml.safe_dump_all(manifest if isinstance(manifest, list) else [manifest])
        )
        args = ["apply", "-f", "-"] + ([f"--namespace={namespace}"] if namespace else [])
        self.plane.kubectl(*args, input=text)

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        status, body = self.plane.request("GET", resource_path(kind, namespace, name))
        return body if status == 200 else None

    def secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        status, body = self.plane.request("GET", f"/api/v1/namespaces/{namespace}/secrets/{name}")
        return body if status == 200 else None

    def wait_for(
        self,
        what: str,
        probe: Callable[[], Any],
        timeout: float = 60.0,
    ) -> Any:
        return wait_until(what, probe, timeout, diagnostics=self.process.log_tail)

    def wait_condition(
        self,
        kind: str,
        namespace: str | None,
        name: str,
        *,
        status: str = "True",
        reason: str | None = None,
        type_: str = "Ready",
        timeout: float = 60.0,
        since_revision: int | None = None,
    ) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            body = self.get(kind, namespace, name)
            found = condition(body, type_)
            if found.get("status") != status or (reason and found.get("reason") != reason):
                return None
            if (
                since_revision is not None
                and (body or {}).get("status", {}).get("revision", 0) <= since_revision
            ):
                return None
            return body

        return self.wait_for(
            f"{kind} {namespace}/{name} {type_}={status} {reason or ''}", probe, timeout
        )  # type: ignore[no-any-return]

    def token(self, label: str = MAIN_LABEL) -> Token:
        if label not in self._tokens:
            self._tokens[label] = Token(
                self.modules.load("softhsm"),
                TokenSelector(label=label),
                Pin(OPERATOR_TOKENS[label]),
            )
        return self._tokens[label]

    def keys(self, prefix: str, label: str = MAIN_LABEL) -> list[KeyRef]:
        """The private keys on a token whose CKA_LABEL starts with `prefix`."""
        return [key for key in self.token(label).list_keys() if key.label.startswith(prefix)]

    def createca(self, token_label: str, key_label: str, *extra: str) -> None:
        """`pkcs11-issuer createca --generate` against one of the test tokens, as an admin
        would run it; `extra` adds --out / --store-in-token / subject flags."""
        config = self.work / "cli-config.yaml"
        config.write_text(f"modules:\n  softhsm: {self.modules.path_of('softhsm')}\n")
        pin = self.work / f"{token_label}.pin"
        pin.write_text(OPERATOR_TOKENS[token_label])
        key_uri = Pkcs11Uri.build(id=secrets.token_bytes(8), object=key_label).format()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pkcs11_issuer.cli.main",
                "createca",
                f"--config={config}",
                "--module=softhsm",
                f"--token-uri=pkcs11:token={token_label}",
                f"--pin-file={pin}",
                f"--key-uri={key_uri}",
                "--generate",
                *extra,
            ],
            check=True,
            capture_output=True,
            env={**self.softhsm.env(), "PATH": os.environ.get("PATH", "")},
        )

    def events(self, namespace: str) -> list[dict[str, Any]]:
        out = self.plane.kubectl("get", "events", f"--namespace={namespace}", "-o", "json").stdout
        return list(json.loads(out)["items"])

    def close(self) -> None:
        for token in self._tokens.values():
            token.close()


def _pin_secret(name: str, pin: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": OPERATOR_NAMESPACE},
        "stringData": {"pin": pin},
    }


def _example_tokens(name: str) -> list[dict[str, Any]]:
    """An example configuration's tokens, on SoftHSM instead of the vendor's module."""
    config = yaml.safe_load((find_repo_root() / "examples" / name).read_text())
    return [{**token, "module": "softhsm"} for token in config["tokens"]]


# SoftHSM's token operator-main, open to every namespace, its PIN in the Secret main-pin.
MAIN_TOKEN: dict[str, Any] = {
    "name": "main",
    "module": "softhsm",
    "uri": f"pkcs11:token={MAIN_LABEL}",
    "pin": {"secret": {"name": "main-pin"}},
    "grants": [{"namespaces": ["*"]}],
}


def operator_config() -> dict[str, Any]:
    module = softhsm_module()
    client = p11kit_client_module()
    assert module is not None and client is not None
    return {
        "modules": {"softhsm": module, "spy": SPY_MODULE, "p11kit": client},
        "clusterResourceNamespace": OPERATOR_NAMESPACE,
        "concurrency": 4,
        "loginRetryInterval": "5m",
        "keyCleanupTimeout": "30s",
        "tokens": [
            MAIN_TOKEN,
            {
                "name": "restricted",
                "module": "softhsm",
                "uri": f"pkcs11:token={RESTRICTED_LABEL}",
                "pin": {"secret": {"name": "restricted-pin"}},
                "grants": [{"namespaces": ["granted-*"]}],
            },
            {
                "name": "guarded",
                "module": "spy",
                "uri": f"pkcs11:token={GUARDED_LABEL}",
                "pin": {"secret": {"name": "guarded-pin"}},
                "grants": [{"namespaces": ["*"]}],
            },
            {
                "name": "sidecar",
                "module": "p11kit",
                "uri": f"pkcs11:token={SIDECAR_LABEL}",
                "pin": {"secret": {"name": "main-pin"}},
                "grants": [{"namespaces": ["*"]}],
            },
            *_example_tokens("aws-cloudhsm/operator-config.yaml"),
            *_example_tokens("aws-kms/operator-config.yaml"),
        ],
    }


@pytest.fixture(scope="module")
def operator(
    control_plane: ControlPlane,
    softhsm: SoftHsm,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Harness]:
    install_crds(control_plane)
    wrong_pin = "wrong-" + secrets.token_hex(8)
    work = tmp_path_factory.mktemp("operator")
    control_plane.kubectl("create", "namespace", OPERATOR_NAMESPACE, check=False)
    control_plane.kubectl(
        "apply",
        "-f",
        "-",
        input=yaml.safe_dump_all(
            [
                _pin_secret("main-pin", TEST_PIN),
                _pin_secret("restricted-pin", TEST_PIN),
                _pin_secret("guarded-pin", wrong_pin),
                _pin_secret("cloudhsm-pin", CLOUDHSM_PIN),
                _pin_secret("kms-pin", TEST_PIN),
            ]
        ),
    )
    spy_log = work / "spy.log"
    config_path = work / "config.yaml"
    health, metrics = free_ports(2)
    config = operator_config()
    config["health"] = {"port": health}
    config["metrics"] = {"port": metrics}
    config_path.write_text(yaml.safe_dump(config))
    module = softhsm_module()
    assert module is not None
    sidecar = P11KitServer(
        module, f"pkcs11:token={SIDECAR_LABEL}", work / "p11-kit.sock", softhsm.env()
    )
    process = OperatorProcess(
        config_path,
        kubeconfig=control_plane.kubeconfig_path,
        env={
            **softhsm.env(),
            "PKCS11SPY": module,
            "PKCS11SPY_OUTPUT": str(spy_log),
            "P11_KIT_SERVER_ADDRESS": sidecar.address,
            "PATH": os.environ.get("PATH", ""),
        },
        log_path=work / "operator.log",
        health_port=health,
        metrics_port=metrics,
    )
    harness = Harness(control_plane, process, softhsm, work, spy_log, sidecar, wrong_pin)
    with sidecar, process:
        yield harness
    harness.close()
