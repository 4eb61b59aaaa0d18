"""The Secret a Certificate gets, and reading it back: only what this operator wrote is
trusted, and an edited Secret says what is wrong with it.

The certificates are made in software with `cryptography` (a tiny CA and a leaf); the Secret
only carries them, so no HSM is involved."""

from __future__ import annotations

import base64
import copy
import datetime
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pkcs11_issuer.controller import secrets
from pkcs11_issuer.controller.secrets import (
    KEY_URI_FIELD,
    SECRET_TYPE,
    KeyFacts,
    Unreadable,
    build_secret,
    is_owned,
    metadata_for,
    read_issued,
)

NOW = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
CERTIFICATE: dict[str, Any] = {
    "apiVersion": "pkcs11-issuer.io/v1alpha1",
    "kind": "Certificate",
    "metadata": {"name": "web", "namespace": "demo", "uid": "0b4c1f3e-uid-of-web"},
}
KEY = KeyFacts(
    token="dev",
    token_label="dev-issuer",
    token_serial="a1b2c3d4e5f60718",
    id=bytes.fromhex("0102a0ff"),
    label="demo/web/1",
    uri="pkcs11:token=dev-issuer;id=%01%02%a0%ff;object=demo%2Fweb%2F1;type=private",
    generated=True,
)
ISSUER = ("pkcs11-issuer.io", "Issuer", "demo-ca")


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None = None,
    *,
    ca: bool = False,
    dns_names: tuple[str, ...] = (),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    issuer_name, signing_key = issuer if issuer is not None else (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if dns_names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]), critical=False
        )
    return builder.sign(signing_key, hashes.SHA256()), key


@pytest.fixture(scope="module")
def pki() -> tuple[x509.Certificate, x509.Certificate, x509.Certificate]:
    """A CA, a leaf it signed, and an unrelated self-signed certificate."""
    ca, ca_key = _certificate("Demo Root CA", ca=True)
    leaf, _ = _certificate(
        "web.demo.svc",
        (ca.subject, ca_key),
        dns_names=("web.demo.svc", "web.demo.svc.cluster.local"),
    )
    other, _ = _certificate("somebody else")
    return ca, leaf, other


def _secret(
    pki: tuple[x509.Certificate, x509.Certificate, x509.Certificate],
    *,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    ca, leaf, _other = pki
    return build_secret(
        CERTIFICATE,
        secret_name="web-tls",
        leaf=leaf,
        chain=(ca,),
        ca=ca,
        key=KEY,
        revision=3,
        spec_digest="spec-digest-1",
        issuer=ISSUER,
        template_labels=labels or {},
        template_annotations=annotations or {},
    )


def _decoded(secret: dict[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def _encode(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# -- writing and reading back ------------------------------------------------------------------


def test_a_built_secret_reads_back_as_issued(
    pki: tuple[x509.Certificate, x509.Certificate, x509.Certificate],
) -> None:
    ca, leaf, _other = pki
    secret = _secret(pki)
    issued = read_issued(secret)
    assert issued.certificate == leaf
    assert issued.chain == (ca,)
    assert issued.key == KEY
    assert issued.revision == 3
    assert issued.spec_digest == "spec-digest-1"
    assert issued.issuer == ISSUER


def test_an_adopted_key_reads_back_as_not_generated(
    pki: tuple[x509.Certificate, x509.Certificate, x509.Certificate],
) -> None:
    ca, leaf, _other = pki
    adopted = KeyFacts(
        token="dev",
        token_label="dev-issuer",
        token_serial="",
        id=b"\x07",
        label="",
        uri="pkcs11:token=dev-issuer;id=%07",
        generated=False,
    )
    secret = build_secret(
        CERTIFICATE,
        secret_name="web-tls",
        leaf=leaf,
        chain=(),
        ca=ca,
        key=adopted,
        revision=1,
        spec_digest="d",
        issuer=ISSUER,
        template_labels={},
        template_annotations={},
    )
    issued = read_issued(secret)
    assert issued.key == adopted
    assert issued.chain == ()


def test_the_secret_holds_the_chain_the_ca_and_a_key_reference_never_a_key(
    pki: tuple[x509.Certificate, x509.Certificate, x509.Certificate],
) -> None:
    ca, leaf, _other = pki
    secret = _secret(pki)
    assert secret["apiVersion"] == "v1" and secret["kind"] == "Secret"
    assert secret["type"] == SECRET_TYPE == "pkcs11-issuer.io/key-reference"
    assert secret["metadata"]["name"] == "web-tls"
    assert secret["metadata"]["namespace"] == "demo"
    data = _decoded(secret)
    assert set(data) == {"tls.crt", "ca.crt", KEY_URI_FIELD}
    assert "tls.key" not in secret["data"]
    assert "PRIVATE KEY" not in "".join(data.values())
    assert x509.load_pem_x509_certificates(data["tls.crt"].encode()) == [leaf, ca]
    assert x509.load_pem_x509_certificate(data["ca.crt"].encode()) == ca
    assert data[KEY_URI_FIELD] == KEY.uri
    annotations = secret["metadata"]["annotations"]
    assert annotations[secrets.COMMON_NAME] == "web.demo.svc"
    assert annotations[secrets.ALT_NAMES] == "web.demo.svc,web.demo.svc.cluster.local"
    assert annotations[secrets.KEY_ID] == "0102a0ff"
    assert annotations[secrets.KEY_GENERATED] == "true"


def test_the_secret_is_owned_by_its_certificate(
    pki: tuple[x509.Certificate, x509.Certificate, x509.Certificate],
) -> None:
    secret = _secret(pki)
    assert secret["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "pkcs11-issuer.io/v1alpha1",
            "kind": "Certificate",
            "name": "web",
            "uid": "0b4c1f3e-uid-of-web",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert secret["metadata"]["labels"][secrets.CERTIFICATE_LABEL] == "web"
    assert is_owned(secret, CERTIFICATE)


# -- ownership: the label and the controller reference, both -----------------------------------


def _without_label(secret: dict[str, Any]) -> None:
    del secret["metadata"]["labels"][secrets.CERTIFICATE_LABEL]


def _label_for_another(secret: dict[str, Any]) -> None:
    secret["metadata"]["labels"][secrets.CERTIFICATE_LABEL] = "api"


def _no_labels(secret: dict[str, Any]) -> None:
    secret["metadata"]["labels"] = None


def _without_owner(secret: dict[str, Any]) -> None:
    del secret["metadata"]["ownerReferences"]


def _owner_with_another_uid(secret: dict[str, Any]) -> None:
    secret["metadata"]["ownerReferences"][0]["uid"] = "uid-of-a-recreated-web"


def _owner_not_controller(secret: dict[str, Any]) -> None:
    secret["metadata"]["ownerReferences"][0]["controller"] = False


def _owner_controller_unset(secret: dict[str, Any]) -> None:
    del secret["metadata"]["ownerReferences"][0]["controller"]


@pytest.mark.parametrize(
    "edit",
    [
        _without_label,
        _label_for_another,
        _no_labels,
        _without_owner,
        _owner_with_another_uid,
        _owner_not_controller,
        _owner_controller_unset,
    ],
)
def test_a_secret_lacking_the_label_or_the_controller_reference_is_not_ours(
    pki: tuple[x509.Certificate, x509.Certificate, x509.Certificate],
    edit: Any,
) -> None:
    secret = _secret(pki)
    edit(secret)
    assert not is_owned(secret, CERTIFICATE)


def test_ownership_is_found_among_several_owner_references(
    pki: tuple[x509.Certificate, x509.Certificate, x509.Certificate],
) -> None:
    secret = _secret(pki)
    ours = secret["metadata"]["ownerReferences"][0]
    secret["metadata"]["ownerReferences"] = [
        {**ours, "kind": "ConfigMap", "name": "x", "uid": "other", "controller": False},
        ours,
    ]
    assert is_owned(secret, CERTIFICATE)


def test_a_foreign_secret_without_metadata_is_not_ours() -> None:
    assert not is_owned({"apiVersion": "v1", "kind": "Secret"}, CERTIFICATE)
    assert not is_owned({"metadata": {"name": "web-tls"}}, CERTIFICATE)


# -- tampering --------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["tls.crt", "ca.crt"])
def test_an_edited_certificate_field_is_noticed(
    pki: tuple[x509.Certificate, x509.Certificate, x509.Certificate], field: str
) -> None:
    _ca, _leaf, other = pki
    secret = _secret(pki)
    secret["data"][field] = _encode(secrets.pem(other).decode())  # a valid, foreign certificate
    with pytest.raises(Unreadable, match="data were changed after the operator wrote them"):
        read_issued(secret)


def test_an_edited_key_reference_is_noticed(
    pki: tuple[x509.Certificate, x509.Certificate, x509.Certificate],
) -> None:
    secret = _secret(pki)
    secret["data"][KEY_URI_FIELD] = _encode("pkcs11:token=dev-issuer;id=%99")
    with pytest.raises(Unreadable, match="data were changed"):
        read_issued(secret)


@pytest.mark.parametrize("field", ["tls.crt", "ca.crt", KEY_URI_FIELD])
def test_a_removed_data_field_is_noticed(
    pki: tuple[x509.Certificate, x509.Certificate, x509.Certificate], field: str
) -> None:
    secret = _secret(pki)
    del secret["data"][field]
    with pytest.raises(Unreadable, match="data were changed"):
        read_issued(secret)


def test_a_renamed_data_field_is_noticed(
    pki: tuple[x509.Certificate, x509.Certificate, x509.Certificate],
) -> None:
    secret = _secret(pki)
    secret["data"]["ca.pem"] = secret["data"].pop("ca.crt")  # same content, another name
    with pytest.raises(Unreadable, match="data were changed"):
        read_issued(secret)


def test_an_added_data_field_is_noticed(
    pki: tuple[x509.Certificate, x509.Certificate, x509.Certificate],
) -> None:
    secret = _secret(pki)
    secret["data"]["tls.key"] = _encode("-----BEGIN PRIVATE KEY-----\n...\n")
    with pytest.raises(Unreadable, match="data were changed"):
        read_issued(secret)


def test_data_that_are_not_base64_text_are_noticed(
    pki: tuple[x509.Certificate, x509.Certificate, x509.Certificate],
) -> None:
    secret = _secret(pki)
    secret["data"]["ca.crt"] = "not base64!"
    with pytest.raises(Unreadable, match="not valid base64"):
        read_issued(secret)
    secret["data"]["ca.crt"] = base64.b64encode(b"\xff\xfe binary").decode()
    with pytest.raises(Unreadable, match="not valid base64 text"):
        read_issued(secret)


@pytest.mark.parametrize("type_", ["Opaque", "kubernetes.io/tls", None])
def test_another_secret_type_is_noticed(
    pki: tuple[x509.Certificate, x509.Certificate, x509.Certificate], type_: str | None
) -> None:
    secret = _secret(pki)
    if type_ is None:
        del secret["type"]
    else:
        secret["type"] = type_
    with pytest.raises(Unreadable, match=f"its type is {type_!r}, not 'pkcs11-issuer.io/key"):
        read_issued(secret)


READ_ANNOTATIONS = [
    secrets.CONTENT_DIGEST,
    secrets.TOKEN,
    secrets.TOKEN_LABEL,
    secrets.TOKEN_SERIAL,
    secrets.KEY_ID,
    secrets.KEY_LABEL,
    secrets.KEY_GENERATED,
    secrets.REVISION,
    secrets.SPEC_DIGEST,
    secrets.ISSUER_GROUP,
    secrets.ISSUER_KIND,
    secrets.ISSUER_NAME,
]


@pytest.mark.parametrize("annotation", READ_ANNOTATIONS)
def test_a_removed_annotation_is_named(
    pki: tuple[x509.Certificate, x509.Certificate, x509.Certificate], annotation: str
) -> None:
    secret = _secret(pki)
    del secret["metadata"]["annotations"][annotation]
    with pytest.raises(Unreadable, match="lacks") as caught:
        read_issued(secret)
    assert annotation in str(caught.value)


def test_a_secret_without_annotations_is_unreadable(
    pki: tuple[x509.Certificate, x509.Certificate, x509.Certificate],
) -> None:
    secret = _secret(pki)
    del secret["metadata"]["annotations"]
    with pytest.raises(Unreadable):
        read_issued(secret)


@pytest.mark.parametrize(
    ("annotation", "value"), [(secrets.REVISION, "three"), (secrets.KEY_ID, "not-hex")]
)
def test_a_garbled_annotation_is_unreadable(
    pki: tuple[x509.Certificate, x509.Certificate, x509.Certificate], annotation: str, value: str
) -> None:
    secret = _secret(pki)
    secret["metadata"]["annotations"][annotation] = value
    with pytest.raises(Unreadable, match="record its key and revision"):
        read_issued(secret)


def test_reading_does_not_change_the_secret(
    pki: tuple[x509.Certificate, x509.Certificate, x509.Certificate],
) -> None:
    secret = _secret(pki)
    before = copy.deepcopy(secret)
    read_issued(secret)
    assert secret == before


# -- labels and annotations: the template's, then ours -----------------------------------------


def test_metadata_merges_the_template_and_ours_win() -> None:
    metadata = metadata_for(
        CERTIFICATE,
        labels={
            "team": "payments",
            secrets.MANAGED_BY_LABEL: "helm",
            secrets.CERTIFICATE_LABEL: "api",
        },
        annotations={"owner": "alice", secrets.CERTIFICATE_LABEL: "api"},
    )
    assert metadata == {
        "labels": {
            "team": "payments",
            secrets.CERTIFICATE_LABEL: "web",
            secrets.HSM_LABEL: "true",
            secrets.MANAGED_BY_LABEL: "pkcs11-issuer",
        },
        "annotations": {"owner": "alice", secrets.CERTIFICATE_LABEL: "web"},
    }


def test_the_built_secret_carries_the_template_but_not_over_ours(
    pki: tuple[x509.Certificate, x509.Certificate, x509.Certificate],
) -> None:
    secret = _secret(
        pki,
        labels={"team": "payments", secrets.MANAGED_BY_LABEL: "helm"},
        annotations={"owner": "alice", secrets.REVISION: "99", secrets.KEY_ID: "ff"},
    )
    metadata = secret["metadata"]
    assert metadata["labels"]["team"] == "payments"
    assert metadata["labels"][secrets.MANAGED_BY_LABEL] == "pkcs11-issuer"
    assert metadata["annotations"]["owner"] == "alice"
    assert metadata["annotations"][secrets.REVISION] == "3"
    issued = read_issued(secret)
    assert issued.revision == 3
    assert issued.key.id == KEY.id
