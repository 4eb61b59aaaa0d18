"""Every example that can run here is applied as written (only the token label of the SoftHSM
examples and the vendor module differ, see support/operator_fixtures.py)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_operator_issuance import EXAMPLES, chain_of, example, issued, openssl_verify, secret_of

from pkcs11_issuer.hsm import KeySpec
from support.hsm_fixtures import CLOUDHSM_LABEL, KMS_LABEL
from support.operator_fixtures import OPERATOR_NAMESPACE, Harness


@pytest.fixture
def fixed_namespace(operator: Harness, request: pytest.FixtureRequest) -> Iterator[str]:
    """The namespace an example names (its configuration grants that namespace)."""
    name: str = request.param
    operator.plane.kubectl("create", "namespace", name, check=False)
    yield name
    operator.plane.kubectl("delete", "namespace", name, "--wait=false")


def test_the_cluster_issuer_example(operator: Harness, tmp_path: Path) -> None:
    operator.apply(example("clusterissuer.yaml"))
    operator.wait_condition("ClusterIssuer", None, "cluster-ca")
    issued(operator, "default", "api")
    secret = secret_of(operator, "default", "api-tls")
    openssl_verify(secret, tmp_path)
    leaf = chain_of(secret)[0]
    assert "pki.example.com/cluster-ca.crl" in str(leaf.extensions)
    root = secret_of(operator, OPERATOR_NAMESPACE, "cluster-root-ca")
    assert chain_of(root)[0].subject == chain_of(secret)[1].subject


@pytest.mark.parametrize("fixed_namespace", ["payments"], indirect=True)
def test_the_aws_cloudhsm_example(operator: Harness, fixed_namespace: str, tmp_path: Path) -> None:
    """Token `cavium`, PIN `user:password` from a Secret, CA certificate from a Secret made
    with `createca --out`, exactly as the example's comments say."""
    ca = tmp_path / "ca.pem"
    operator.createca(
        CLOUDHSM_LABEL, "issuing-ca", "--common-name=Payments Issuing CA", f"--out={ca}"
    )
    operator.plane.kubectl(
        "create",
        "secret",
        "generic",
        "cloudhsm-ca",
        f"--namespace={fixed_namespace}",
        f"--from-file=tls.crt={ca}",
    )
    operator.apply((EXAMPLES / "aws-cloudhsm/issuer.yaml").read_text(), fixed_namespace)
    operator.wait_condition("Issuer", fixed_namespace, "cloudhsm-ca")
    issued(operator, fixed_namespace, "checkout")
    secret = secret_of(operator, fixed_namespace, "checkout-tls")
    openssl_verify(secret, tmp_path)
    assert operator.keys(f"{fixed_namespace}/checkout/", label=CLOUDHSM_LABEL)


@pytest.mark.parametrize("fixed_namespace", ["edge"], indirect=True)
def test_the_aws_kms_example_adopts_an_existing_key(
    operator: Harness, fixed_namespace: str, tmp_path: Path
) -> None:
    token = operator.token(KMS_LABEL)
    label = "edge-signing-key"
    if not operator.keys(label, label=KMS_LABEL):
        token.generate_key(KeySpec.of("ECDSA", 256), id=secrets.token_bytes(8), label=label)
    before = {key.id for key in token.list_keys()}
    operator.apply((EXAMPLES / "aws-kms/certificate.yaml").read_text(), fixed_namespace)
    issued(operator, fixed_namespace, "edge-signing")
    secret = secret_of(operator, fixed_namespace, "edge-signing")
    openssl_verify(secret, tmp_path)
    adopted = token.find_key(label=label)
    assert chain_of(secret)[0].public_key() == adopted.public_key
    assert {key.id for key in token.list_keys()} == before, "nothing generated"
    operator.plane.kubectl(
        "delete",
        "certificate.pkcs11-issuer.io",
        "edge-signing",
        f"--namespace={fixed_namespace}",
        "--timeout=60s",
    )
    token.find_key(label=label)  # adopted keys are never destroyed
