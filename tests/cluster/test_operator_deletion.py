"""Deleting a Certificate: which HSM keys go with it, and how the finalizer gets out of the way
when they cannot (HSM unreachable), as docs/operations.md promises.

The operator here has `keyCleanupTimeout: 30s` (support/operator_fixtures.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from test_operator_issuance import SELF_SIGNED, certificate, issued
from test_operator_issuers import ca_issuer, key_uri

from support.operator_fixtures import MAIN_LABEL, SIDECAR_LABEL, Harness, condition

SIDECAR_KEY = {"algorithm": "ECDSA", "pkcs11": f"pkcs11:token={SIDECAR_LABEL}"}


def delete(operator: Harness, namespace: str, name: str, *, wait: bool) -> None:
    operator.plane.kubectl(
        "delete",
        "certificate.pkcs11-issuer.io",
        name,
        f"--namespace={namespace}",
        f"--wait={str(wait).lower()}",
        "--timeout=60s",
    )


def gone(operator: Harness, namespace: str, name: str, timeout: float) -> None:
    operator.wait_for(
        f"Certificate {namespace}/{name} to be gone",
        lambda: operator.get("Certificate", namespace, name) is None,
        timeout,
    )


def reasons(operator: Harness, namespace: str, name: str) -> set[str]:
    return {
        event["reason"]
        for event in operator.events(namespace)
        if event["involvedObject"]["name"] == name
    }


def pending(operator: Harness, namespace: str, name: str) -> dict[str, Any]:
    body = operator.wait_condition(
        "Certificate", namespace, name, status="False", reason="DeletionPending"
    )
    return condition(body)


def test_deletion_policy_retain_keeps_the_key(operator: Harness, namespace: str) -> None:
    spec = certificate("kept", "selfsigned")
    spec["spec"]["privateKey"]["deletionPolicy"] = "Retain"
    operator.apply([SELF_SIGNED, spec], namespace)
    issued(operator, namespace, "kept")
    delete(operator, namespace, "kept", wait=True)
    keys = operator.keys(f"{namespace}/kept/")
    assert len(keys) == 1
    operator.token().delete_key(id=keys[0].id)


def test_a_certificate_outliving_its_issuer_still_destroys_its_key(
    operator: Harness, namespace: str
) -> None:
    """The key is generated on the CA's token; once the Issuer is gone only the Secret still
    says which token that was, and the namespace is granted several."""
    label = f"{namespace}/ca"
    operator.createca(MAIN_LABEL, label, "--common-name=Short-lived CA", "--store-in-token")
    leaf = certificate("orphan", "ca", privateKey={"algorithm": "ECDSA"})
    operator.apply([ca_issuer("ca", pkcs11=key_uri(label)), leaf], namespace)
    issued(operator, namespace, "orphan")
    assert len(operator.keys(f"{namespace}/orphan/")) == 1
    operator.plane.kubectl("delete", "issuer.pkcs11-issuer.io", "ca", f"--namespace={namespace}")
    delete(operator, namespace, "orphan", wait=True)
    assert operator.keys(f"{namespace}/orphan/") == []


@contextmanager
def deleted_while_unreachable(
    operator: Harness, namespace: str, name: str
) -> Iterator[dict[str, Any]]:
    """A Certificate with its key on the sidecar token, deleted while the sidecar is down;
    yields its DeletionPending condition, with the sidecar still down."""
    operator.apply(
        [SELF_SIGNED, certificate(name, "selfsigned", privateKey=SIDECAR_KEY)], namespace
    )
    issued(operator, namespace, name)
    operator.sidecar.stop()
    try:
        delete(operator, namespace, name, wait=False)
        yield pending(operator, namespace, name)
    finally:
        operator.sidecar.start()


def assert_key_left_then_remove(operator: Harness, namespace: str, name: str) -> None:
    """Given up on, not destroyed: the key is still there for the admin to find."""
    keys = operator.keys(f"{namespace}/{name}/", label=SIDECAR_LABEL)
    assert len(keys) == 1
    operator.token(SIDECAR_LABEL).delete_key(id=keys[0].id)


def test_an_unreachable_hsm_holds_deletion_until_the_cleanup_timeout(
    operator: Harness, namespace: str
) -> None:
    with deleted_while_unreachable(operator, namespace, "stranded") as waiting:
        assert "HsmUnavailable" in waiting["message"]
        assert "skip-key-cleanup" in waiting["message"]
        gone(operator, namespace, "stranded", timeout=90)
    assert "KeyNotDestroyed" in reasons(operator, namespace, "stranded")
    assert_key_left_then_remove(operator, namespace, "stranded")


def test_the_skip_annotation_releases_a_pending_deletion(operator: Harness, namespace: str) -> None:
    with deleted_while_unreachable(operator, namespace, "skipped"):
        operator.plane.kubectl(
            "annotate",
            "certificate.pkcs11-issuer.io",
            "skipped",
            f"--namespace={namespace}",
            "pkcs11-issuer.io/skip-key-cleanup=true",
        )
        gone(operator, namespace, "skipped", timeout=60)
    # Released by the annotation, not by the timeout (which says so with this Event).
    assert "KeyNotDestroyed" not in reasons(operator, namespace, "skipped")
    assert_key_left_then_remove(operator, namespace, "skipped")
