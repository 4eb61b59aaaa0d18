"""Root, intermediate and leaf, every signature made inside the HSM, checked by OpenSSL's own
command line: `openssl verify` for the chain, `openssl x509 -text` for what it says."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pkcs11_issuer.hsm import MECHANISMS_NEEDED, KeyAlgorithm, KeyRef, KeySpec, Token
from pkcs11_issuer.hsm.errors import UnsupportedError
from pkcs11_issuer.x509 import (
    CertificateProfile,
    Issuer,
    IssuerError,
    NameConstraintItems,
    NameConstraints,
    SignatureScheme,
    Subject,
    build_csr,
    hsm_private_key,
    self_sign,
)
from support.tools import need_executable

ROOT = CertificateProfile(
    subject=Subject(
        common_name="HSM Test Root", organizations=("pkcs11-issuer",), countries=("GB",)
    ),
    is_ca=True,
    max_path_length=1,
    usages=("cert sign", "crl sign"),
)
INTERMEDIATE = CertificateProfile(
    subject=Subject(common_name="HSM Test Intermediate", organizations=("pkcs11-issuer",)),
    is_ca=True,
    max_path_length=0,
    usages=("cert sign", "crl sign", "digital signature"),
    name_constraints=NameConstraints(
        permitted=NameConstraintItems(
            dns_domains=("example.com",),
            ip_ranges=("192.0.2.0/24",),
            email_addresses=("example.com",),
            uri_domains=("example.com",),
        ),
    ),
    crl_distribution_points=("http://crl.example.com/root.crl",),
    issuing_certificate_urls=("http://pki.example.com/root.crt",),
)
LEAF = CertificateProfile(
    subject=Subject(
        common_name="www.example.com",
        organizations=("Example Ltd",),
        countries=("GB",),
        organizational_units=("Web",),
        localities=("London",),
        provinces=("Greater London",),
        street_addresses=("1 Example Road",),
        postal_codes=("N1 9GU",),
        serial_number="0042",
    ),
    dns_names=("www.example.com", "example.com"),
    ip_addresses=("192.0.2.10",),
    uris=("https://example.com/service",),
    email_addresses=("ops@example.com",),
    usages=("digital signature", "key encipherment", "server auth", "client auth"),
    crl_distribution_points=("http://crl.example.com/intermediate.crl",),
    ocsp_servers=("http://ocsp.example.com",),
    issuing_certificate_urls=("http://pki.example.com/intermediate.crt",),
)


@dataclass(frozen=True)
class Chain:
    name: str
    spec: KeySpec  # of the root's and the intermediate's keys
    scheme: SignatureScheme  # how both CAs sign
    openssl_name: str  # what `openssl x509 -text` calls that signature algorithm


CHAINS = [
    Chain("rsa-2048", KeySpec.of("RSA", 2048), SignatureScheme(), "sha256WithRSAEncryption"),
    Chain(
        "rsa-3072", KeySpec.of("RSA", 3072), SignatureScheme("sha384"), "sha384WithRSAEncryption"
    ),
    Chain(
        "rsa-4096", KeySpec.of("RSA", 4096), SignatureScheme("sha512"), "sha512WithRSAEncryption"
    ),
    Chain("p-256", KeySpec.of("ECDSA", 256), SignatureScheme(), "ecdsa-with-SHA256"),
    Chain("p-384", KeySpec.of("ECDSA", 384), SignatureScheme(), "ecdsa-with-SHA384"),
    Chain("rsa-pss", KeySpec.of("RSA", 2048), SignatureScheme(rsa_pss=True), "rsassaPss"),
    Chain("ed25519", KeySpec.of("Ed25519"), SignatureScheme(), "ED25519"),
]

KeyMaker = Callable[[str, KeySpec], KeyRef]


@pytest.fixture
def make_key(token: Token, key_name: tuple[bytes, str]) -> Iterator[KeyMaker]:
    """Keys for this test, one per role; all deleted afterwards."""
    key_id, label = key_name
    made: list[bytes] = []

    def make(role: str, spec: KeySpec) -> KeyRef:
        role_id = key_id[-50:] + b"/" + role.encode()
        made.append(role_id)
        return token.generate_key(spec, id=role_id, label=f"{label[-50:]}/{role}")

    yield make
    for role_id in made:
        token.delete_key(id=role_id)


def openssl(*args: str | Path) -> str:
    binary = need_executable("openssl", "apt-get install openssl")
    result = subprocess.run([binary, *map(str, args)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"openssl {' '.join(map(str, args))}: {result.stderr}"
    return result.stdout + result.stderr  # `req -verify` reports on either, by version


def write_pem(path: Path, certificate: x509.Certificate | x509.CertificateSigningRequest) -> Path:
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path


def check_root(text: str, chain: Chain) -> None:
    assert f"Signature Algorithm: {chain.openssl_name}" in text
    if chain.spec.algorithm is KeyAlgorithm.RSA:
        assert f"Public-Key: ({chain.spec.size} bit)" in text
    assert "X509v3 Basic Constraints: critical\n                CA:TRUE, pathlen:1" in text
    assert "X509v3 Key Usage: critical\n                Certificate Sign, CRL Sign\n" in text
    if chain.scheme.rsa_pss:
        assert "Mask Algorithm: mgf1 with sha256" in text
        assert "Salt Length: 0x20" in text


def check_intermediate(text: str, chain: Chain) -> None:
    assert f"Signature Algorithm: {chain.openssl_name}" in text
    assert "X509v3 Basic Constraints: critical\n                CA:TRUE, pathlen:0" in text
    assert "Digital Signature, Certificate Sign, CRL Sign" in text
    assert "X509v3 Name Constraints: critical" in text
    permitted = text.split("Permitted:")[1].split("X509v3", maxsplit=1)[0].split()
    assert permitted == [
        "DNS:example.com",
        "IP:192.0.2.0/255.255.255.0",
        "email:example.com",
        "URI:example.com",
    ]
    assert "URI:http://crl.example.com/root.crl" in text
    assert "CA Issuers - URI:http://pki.example.com/root.crt" in text


def check_leaf(text: str, chain: Chain) -> None:
    assert f"Signature Algorithm: {chain.openssl_name}" in text
    assert "X509v3 Basic Constraints: critical\n                CA:FALSE" in text
    assert "X509v3 Key Usage: critical\n                Digital Signature, Key Encipherment" in text
    assert "TLS Web Server Authentication, TLS Web Client Authentication" in text
    assert (
        "DNS:www.example.com, DNS:example.com, IP Address:192.0.2.10, "
        "URI:https://example.com/service, email:ops@example.com"
    ) in text
    assert "OCSP - URI:http://ocsp.example.com" in text
    assert "CA Issuers - URI:http://pki.example.com/intermediate.crt" in text
    assert "URI:http://crl.example.com/intermediate.crl" in text


def key_identifiers(pem: Path) -> tuple[str, str]:
    """(subject key identifier, authority key identifier) as OpenSSL prints them."""
    text = openssl(
        "x509", "-in", pem, "-noout", "-ext", "subjectKeyIdentifier,authorityKeyIdentifier"
    )
    ski = text.split("Subject Key Identifier:")[1].split()[0]
    aki = text.split("Authority Key Identifier:")[1].split()[0]
    return ski, aki


@pytest.mark.parametrize("chain", CHAINS, ids=[c.name for c in CHAINS])
def test_hsm_signed_chain_verifies_with_openssl(
    token: Token, make_key: KeyMaker, tmp_path: Path, chain: Chain
) -> None:
    if not set(MECHANISMS_NEEDED[chain.spec.algorithm]) <= token.mechanisms():
        # p11-kit 0.24's RPC does not carry the EdDSA mechanisms: a clear refusal, no key.
        with pytest.raises(UnsupportedError, match="CKR_MECHANISM_INVALID"):
            make_key("root", chain.spec)
        return
    root_key = hsm_private_key(token, make_key("root", chain.spec))
    intermediate_key = hsm_private_key(token, make_key("intermediate", chain.spec))
    leaf_key = hsm_private_key(token, make_key("leaf", KeySpec.of("ECDSA", 256)))

    root = self_sign(ROOT, root_key, chain.scheme)
    intermediate_csr = build_csr(INTERMEDIATE, intermediate_key)
    intermediate = Issuer(root, root_key, chain.scheme).issue(intermediate_csr, INTERMEDIATE)
    with pytest.raises(IssuerError, match="another key"):
        Issuer(root, intermediate_key)
    leaf_csr = build_csr(LEAF, leaf_key)
    leaf = Issuer(intermediate, intermediate_key, chain.scheme).issue(leaf_csr, LEAF)

    root_pem = write_pem(tmp_path / "root.pem", root)
    intermediate_pem = write_pem(tmp_path / "intermediate.pem", intermediate)
    leaf_pem = write_pem(tmp_path / "leaf.pem", leaf)
    csr_pem = write_pem(tmp_path / "leaf.csr", leaf_csr)
    assert "verify OK" in openssl("req", "-in", csr_pem, "-verify", "-noout")
    strict = ("verify", "-x509_strict", "-CAfile", root_pem)
    assert openssl(*strict, intermediate_pem).strip() == f"{intermediate_pem}: OK"
    verified = openssl(*strict, "-purpose", "sslserver", "-untrusted", intermediate_pem, leaf_pem)
    assert verified.strip() == f"{leaf_pem}: OK"

    check_root(openssl("x509", "-in", root_pem, "-noout", "-text"), chain)
    check_intermediate(openssl("x509", "-in", intermediate_pem, "-noout", "-text"), chain)
    check_leaf(openssl("x509", "-in", leaf_pem, "-noout", "-text"), chain)
    subject = openssl("x509", "-in", leaf_pem, "-noout", "-subject", "-nameopt", "RFC2253")
    assert subject.strip() == (
        "subject=serialNumber=0042,CN=www.example.com,OU=Web,O=Example Ltd,postalCode=N1 9GU,"
        "street=1 Example Road,L=London,ST=Greater London,C=GB"
    )
    # Each certificate names its issuer's key: root -> intermediate -> leaf.
    root_ski, root_aki = key_identifiers(root_pem)
    intermediate_ski, intermediate_aki = key_identifiers(intermediate_pem)
    _leaf_ski, leaf_aki = key_identifiers(leaf_pem)
    assert (root_aki, intermediate_aki, leaf_aki) == (root_ski, root_ski, intermediate_ski)
    serial = openssl("x509", "-in", leaf_pem, "-noout", "-serial").strip().removeprefix("serial=")
    assert int(serial, 16).bit_length() > 64


def test_one_issuer_signs_from_several_threads(
    token: Token, make_key: KeyMaker, tmp_path: Path
) -> None:
    root_key = hsm_private_key(token, make_key("root", KeySpec.of("ECDSA", 256)))
    leaf_key = hsm_private_key(token, make_key("leaf", KeySpec.of("ECDSA", 256)))
    issuer = Issuer(self_sign(ROOT, root_key), root_key)
    csr = build_csr(LEAF, leaf_key)
    issued: list[x509.Certificate] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(25):
                issued.append(issuer.issue(csr, LEAF))
        except BaseException as error:  # reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(issued) == 100
    assert len({c.serial_number for c in issued}) == 100
    for certificate in issued:
        certificate.verify_directly_issued_by(issuer.certificate)
    root_pem = write_pem(tmp_path / "root.pem", issuer.certificate)
    assert openssl(
        "verify", "-CAfile", root_pem, write_pem(tmp_path / "leaf.pem", issued[-1])
    ).endswith(": OK\n")
