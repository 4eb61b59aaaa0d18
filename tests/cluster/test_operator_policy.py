"""What the operator refuses, and what it survives: modules off the allowlist, tokens and keys
a namespace is not granted, PINs in resources, a wrong PIN, an HSM that goes away."""

from __future__ import annotations

import re
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from test_operator_issuance import SELF_SIGNED, certificate, issued

from pkcs11_issuer.hsm import KeySpec
from pkcs11_issuer.uri import Pkcs11Uri
from support.operator_fixtures import (
    GUARDED_LABEL,
    MAIN_LABEL,
    RESTRICTED_LABEL,
    SIDECAR_LABEL,
    Harness,
    condition,
)
from support.tools import need_executable


@pytest.fixture
def granted_namespace(operator: Harness) -> Iterator[str]:
    name = f"granted-{secrets.token_hex(3)}"
    operator.plane.kubectl("create", "namespace", name)
    yield name
    operator.plane.kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture
def evil_module(tmp_path: Path) -> tuple[Path, Path]:
    """A shared library that leaves a mark when anything loads it."""
    gcc = need_executable("gcc")
    marker = tmp_path / "loaded"
    source = tmp_path / "evil.c"
    source.write_text(
        "#include <stdio.h>\n"
        "__attribute__((constructor)) static void mark(void) {\n"
        f'  FILE *f = fopen("{marker}", "w"); if (f) {{ fputs("loaded", f); fclose(f); }}\n'
        "}\n"
    )
    library = tmp_path / "evil.so"
    subprocess.run([gcc, "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
    return library, marker


def test_a_module_off_the_allowlist_is_refused_and_never_loaded(
    operator: Harness, namespace: str, evil_module: tuple[Path, Path]
) -> None:
    library, marker = evil_module
    uri = f"pkcs11:token={MAIN_LABEL}?module-path={library}"
    operator.apply(
        [
            SELF_SIGNED,
            certificate("evil", "selfsigned", privateKey={"algorithm": "ECDSA", "pkcs11": uri}),
        ],
        namespace,
    )
    body = operator.wait_condition(
        "Certificate", namespace, "evil", status="False", reason="NotAllowed"
    )
    assert "allowlist" in condition(body)["message"]
    assert not marker.exists()
    assert operator.keys(f"{namespace}/evil/") == []


def test_a_namespace_cannot_use_a_token_it_is_not_granted(
    operator: Harness, namespace: str, granted_namespace: str
) -> None:
    key = {"algorithm": "ECDSA", "pkcs11": f"pkcs11:token={RESTRICTED_LABEL}"}
    operator.apply([SELF_SIGNED, certificate("intruder", "selfsigned", privateKey=key)], namespace)
    body = operator.wait_condition(
        "Certificate", namespace, "intruder", status="False", reason="NotAllowed"
    )
    assert (
        f"namespace {namespace!r}" in condition(body)["message"]
        or namespace in condition(body)["message"]
    )
    operator.apply(
        [SELF_SIGNED, certificate("tenant", "selfsigned", privateKey=key)], granted_namespace
    )
    issued(operator, granted_namespace, "tenant")
    assert len(operator.keys(f"{granted_namespace}/tenant/", label=RESTRICTED_LABEL)) == 1
    assert operator.keys(f"{namespace}/intruder/", label=RESTRICTED_LABEL) == []


def test_a_namespace_cannot_adopt_a_key_of_another_namespace(
    operator: Harness, namespace: str
) -> None:
    token = operator.token()
    label = f"someone-else/{secrets.token_hex(3)}"
    token.generate_key(KeySpec.of("ECDSA", 256), id=secrets.token_bytes(8), label=label)
    key = {
        "algorithm": "ECDSA",
        "rotationPolicy": "Never",
        "pkcs11": Pkcs11Uri.build(token=MAIN_LABEL, object=label).format(),
    }
    operator.apply([SELF_SIGNED, certificate("thief", "selfsigned", privateKey=key)], namespace)
    body = operator.wait_condition(
        "Certificate", namespace, "thief", status="False", reason="NotAllowed"
    )
    assert label in condition(body)["message"]
    assert operator.secret(namespace, "thief-tls") is None


def test_a_pin_in_a_resource_is_refused_with_where_it_belongs(
    operator: Harness, namespace: str
) -> None:
    uri = f"pkcs11:token={MAIN_LABEL}?pin-value=1234"
    result = operator.plane.kubectl(
        "apply",
        f"--namespace={namespace}",
        "-f",
        "-",
        check=False,
        input=_yaml(
            certificate("pinned", "selfsigned", privateKey={"algorithm": "ECDSA", "pkcs11": uri})
        ),
    )
    assert result.returncode != 0
    assert "the PIN belongs in the Secret" in result.stderr
    assert "pin-value=1234" not in operator.process.log_tail(100_000)


def test_a_wrong_pin_says_so_and_logs_in_once_per_interval(
    operator: Harness, namespace: str
) -> None:
    key = {"algorithm": "ECDSA", "pkcs11": f"pkcs11:token={GUARDED_LABEL}"}
    operator.apply(
        [
            SELF_SIGNED,
            *(certificate(f"locked-{i}", "selfsigned", privateKey=key) for i in range(5)),
        ],
        namespace,
    )
    for i in range(5):
        body = operator.wait_condition(
            "Certificate", namespace, f"locked-{i}", status="False", reason="PinIncorrect"
        )
        assert "PIN" in condition(body)["message"]
    # Everything else keeps being served meanwhile.
    operator.apply(certificate("unaffected", "selfsigned"), namespace)
    issued(operator, namespace, "unaffected")
    logins = len(re.findall(r"\bC_Login\b", operator.spy_log.read_text(errors="replace")))
    assert logins == 1, f"{logins} C_Login calls through the spy"
    assert operator.wrong_pin not in operator.process.log_tail(100_000)


def test_the_hsm_going_away_and_coming_back_is_recovered_by_itself(
    operator: Harness, namespace: str
) -> None:
    key = {"algorithm": "ECDSA", "pkcs11": f"pkcs11:token={SIDECAR_LABEL}"}
    operator.apply([SELF_SIGNED, certificate("before", "selfsigned", privateKey=key)], namespace)
    issued(operator, namespace, "before")
    operator.sidecar.stop()
    try:
        operator.apply(certificate("during", "selfsigned", privateKey=key), namespace)
        operator.wait_condition(
            "Certificate", namespace, "during", status="False", reason="HsmUnavailable"
        )
    finally:
        operator.sidecar.start()
    issued(operator, namespace, "during")
    assert condition(operator.get("Certificate", namespace, "before"))["status"] == "True"


def _yaml(document: object) -> str:
    return yaml.safe_dump(document)
