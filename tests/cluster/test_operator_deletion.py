"""Deleting a Certificate: which HSM keys go with it, and how the finalizer gets out of the way
when they cannot (HSM unreachable), as docs/operations.md promises.

The operator here has `keyCleanupTimeout: 30s` (support/operator_fixtures.py)."""

from __future__ import annotations

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


def test_an_unreachable_hsm_holds_deletion_until_the_cleanup_timeout(
    operator: Harness, namespace: str
) -> None:
    operator.apply(
        [SELF_SIGNED, certificate("stranded", "selfsigned", privateKey=SIDECAR_KEY)], namespace
    )
    issued(operator, namespace, "stranded")
    operator.sidecar.stop()
    try:
        delete(operator, namespace, "stranded", wait=False)
        message = pending(operator, namespace, "stranded")["message"]
        assert "HsmUnavailable" in message and "skip-key-cleanup" in message
        gone(operator, namespace, "stranded", timeout=90)
    finally:
        operator.sidecar.start()
    assert "KeyNotDestroyed" in reasons(operator, namespace, "stranded")
    # Given up on, not destroyed: the key is still there for the admin to find.
    keys = operator.keys(f"{namespace}/stranded/", label=SIDECAR_LABEL)
    assert len(keys) == 1
    operator.token(SIDECAR_LABEL).delete_key(id=keys[0].id)


def test_the_skip_annotation_releases_a_pending_deletion(operator: Harness, namespace: str) -> None:
    operator.apply(
        [SELF_SIGNED, certificate("skipped", "selfsigned", privateKey=SIDECAR_KEY)], namespace
    )
    issued(operator, namespace, "skipped")
    operator.sidecar.stop()
    try:
        delete(operator, namespace, "skipped", wait=False)
        pending(operator, namespace, "skipped")
        operator.plane.kubectl(
            "annotate",
            "certificate.pkcs11-issuer.io",
            "skipped",
            f"--namespace={namespace}",
            "pkcs11-issuer.io/skip-key-cleanup=true",
        )
        gone(operator, namespace, "skipped", timeout=60)
    finally:
        operator.sidecar.start()
    # Released by the annotation, not by the timeout (which says so with this Event).
    assert "KeyNotDestroyed" not in reasons(operator, namespace, "skipped")
    keys = operator.keys(f"{namespace}/skipped/", label=SIDECAR_LABEL)
    assert len(keys) == 1
    operator.token(SIDECAR_LABEL).delete_key(id=keys[0].id)
