"""Building and signing with ordinary software keys: what the certificates say, and what an
issuer refuses. The same code signs with HSM keys in tests/hsm/test_x509_chain.py."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtensionOID, NameOID

from pkcs11_issuer.x509 import (
    CertificateProfile,
    CsrError,
    Issuer,
    IssuerError,
    NameConstraintItems,
    NameConstraints,
    ProfileError,
    SelfSigner,
    SignatureScheme,
    Subject,
    build_csr,
    random_serial_number,
    self_sign,
    signature_parameters,
    verify_csr,
)

NOW = datetime.datetime(2030, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)
DAY = datetime.timedelta(days=1)


@pytest.fixture(scope="module")
def root_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture(scope="module")
def leaf_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 2048)


def ca_profile(
    name: str = "Root", path_length: int | None = 1, days: int = 3650
) -> CertificateProfile:
    return CertificateProfile(
        subject=Subject(common_name=name, organizations=("Acme",)),
        is_ca=True,
        max_path_length=path_length,
        usages=("cert sign", "crl sign"),
        duration=days * DAY,
    )


LEAF = CertificateProfile(
    subject=Subject(common_name="leaf.example.com"),
    dns_names=("leaf.example.com",),
    ip_addresses=("192.0.2.1",),
    uris=("spiffe://example.com/leaf",),
    email_addresses=("ops@example.com",),
    usages=("digital signature", "key encipherment", "server auth", "client auth"),
    duration=30 * DAY,
    crl_distribution_points=("http://crl.example.com/ca.crl",),
    ocsp_servers=("http://ocsp.example.com",),
    issuing_certificate_urls=("http://example.com/ca.crt",),
)


@pytest.fixture(scope="module")
def root(root_key: ec.EllipticCurvePrivateKey) -> Issuer:
    return Issuer(self_sign(ca_profile(), root_key, now=NOW), root_key)


def extension(certificate: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.Extension:  # type: ignore[type-arg]
    return certificate.extensions.get_extension_for_class(kind)


def test_root_is_self_signed_ca_with_its_own_key_identifiers(
    root: Issuer, root_key: ec.EllipticCurvePrivateKey
) -> None:
    certificate = root.certificate
    assert certificate.issuer == certificate.subject
    certificate.verify_directly_issued_by(certificate)
    constraints = extension(certificate, x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 1
    usage = extension(certificate, x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    assert not usage.value.digital_signature
    ski = extension(certificate, x509.SubjectKeyIdentifier).value
    aki = extension(certificate, x509.AuthorityKeyIdentifier).value
    assert ski.digest == aki.key_identifier
    assert ski == x509.SubjectKeyIdentifier.from_public_key(root_key.public_key())
    # P-384 signs with SHA-384 unless told otherwise, as Go does.
    assert isinstance(certificate.signature_hash_algorithm, hashes.SHA384)
    assert certificate.not_valid_before_utc == NOW
    assert certificate.not_valid_after_utc == NOW + 3650 * DAY


def test_leaf_carries_everything_the_profile_says(
    root: Issuer, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    leaf = root.issue(build_csr(LEAF, leaf_key), LEAF, now=NOW)
    leaf.verify_directly_issued_by(root.certificate)
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "leaf.example.com"
    assert leaf.issuer == root.certificate.subject
    san = extension(leaf, x509.SubjectAlternativeName)
    assert not san.critical  # the subject is not empty
    assert set(san.value) == set(LEAF.general_names())
    constraints = extension(leaf, x509.BasicConstraints)
    assert constraints.critical and not constraints.value.ca
    usage = extension(leaf, x509.KeyUsage).value
    assert usage.digital_signature and usage.key_encipherment and not usage.key_cert_sign
    eku = extension(leaf, x509.ExtendedKeyUsage)
    assert not eku.critical
    assert [o.dotted_string for o in eku.value] == ["1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"]
    aki = extension(leaf, x509.AuthorityKeyIdentifier).value
    root_ski = extension(root.certificate, x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == root_ski.digest
    points = extension(leaf, x509.CRLDistributionPoints).value
    assert [p.full_name for p in points] == [
        [x509.UniformResourceIdentifier("http://crl.example.com/ca.crl")]
    ]
    access = {
        (a.access_method, a.access_location.value)
        for a in extension(leaf, x509.AuthorityInformationAccess).value
    }
    assert access == {
        (AuthorityInformationAccessOID.OCSP, "http://ocsp.example.com"),
        (AuthorityInformationAccessOID.CA_ISSUERS, "http://example.com/ca.crt"),
    }
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == 30 * DAY


def test_subject_alternative_names_are_critical_when_the_subject_is_empty(
    root: Issuer, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    profile = CertificateProfile(dns_names=("only.example.com",))
    leaf = root.issue(build_csr(profile, leaf_key), profile, now=NOW)
    assert len(leaf.subject) == 0
    assert extension(leaf, x509.SubjectAlternativeName).critical


def test_serial_numbers_are_random_positive_and_fit_20_octets() -> None:
    serials = {random_serial_number() for _ in range(2000)}
    assert len(serials) == 2000
    assert all(0 < s < 2**128 for s in serials)
    # 128 random bits: some serials use the top bit, so none is a small counter.
    assert any(s >= 2**127 for s in serials)


def test_intermediate_with_name_constraints_and_rsa_pss(
    root: Issuer, rsa_key: rsa.RSAPrivateKey, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    profile = CertificateProfile(
        subject=Subject(common_name="Intermediate"),
        is_ca=True,
        max_path_length=0,
        usages=("cert sign", "crl sign"),
        name_constraints=NameConstraints(
            permitted=NameConstraintItems(dns_domains=("example.com",)),
        ),
    )
    intermediate = root.issue(build_csr(profile, rsa_key), profile, now=NOW)
    constraints = extension(intermediate, x509.NameConstraints)
    assert constraints.critical
    assert constraints.value.permitted_subtrees == [x509.DNSName("example.com")]
    issuer = Issuer(intermediate, rsa_key, SignatureScheme(hash="sha384", rsa_pss=True))
    leaf = issuer.issue(build_csr(LEAF, leaf_key), LEAF, now=NOW)
    leaf.verify_directly_issued_by(intermediate)
    parameters = leaf.signature_algorithm_parameters
    assert isinstance(parameters, padding.PSS)
    assert parameters._salt_length == 48  # the hash length, as Go writes PSS certificates
    assert isinstance(leaf.signature_hash_algorithm, hashes.SHA384)


def test_a_leaf_never_outlives_its_issuer(
    root_key: ec.EllipticCurvePrivateKey, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    issuer = Issuer(self_sign(ca_profile(days=10), root_key, now=NOW), root_key)
    later = NOW + 5 * DAY
    leaf = issuer.issue(build_csr(LEAF, leaf_key), LEAF, now=later)
    assert leaf.not_valid_before_utc == later
    assert leaf.not_valid_after_utc == issuer.certificate.not_valid_after_utc


def test_an_issuer_that_is_not_a_ca_is_refused(
    root: Issuer, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    leaf = root.issue(build_csr(LEAF, leaf_key), LEAF, now=NOW)
    with pytest.raises(IssuerError, match="is not a CA certificate"):
        Issuer(leaf, leaf_key)


def test_a_ca_certificate_without_key_cert_sign_is_refused_as_issuer(
    root_key: ec.EllipticCurvePrivateKey,
) -> None:
    # A certificate this package would never make, as other tools can.
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "odd CA")])
    usage = x509.KeyUsage(True, False, False, False, False, False, True, False, False)
    odd = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(root_key.public_key())
        .serial_number(1)
        .not_valid_before(NOW)
        .not_valid_after(NOW + DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .add_extension(usage, True)
        .sign(root_key, hashes.SHA256())
    )
    with pytest.raises(IssuerError, match="lacks the keyCertSign usage"):
        Issuer(odd, root_key)


def test_an_issuer_certificate_for_another_key_is_refused(
    root: Issuer, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    with pytest.raises(IssuerError, match="is for another key than the one that would sign"):
        Issuer(root.certificate, leaf_key)


@pytest.mark.parametrize("moment", [NOW - DAY, NOW + 3651 * DAY])
def test_an_issuer_outside_its_validity_is_refused(
    root: Issuer, leaf_key: ec.EllipticCurvePrivateKey, moment: datetime.datetime
) -> None:
    with pytest.raises(IssuerError, match="is not valid now"):
        root.issue(build_csr(LEAF, leaf_key), LEAF, now=moment)


def test_path_length_leaves_room_for_the_ca_asked_for(
    root_key: ec.EllipticCurvePrivateKey, rsa_key: rsa.RSAPrivateKey
) -> None:
    zero = Issuer(self_sign(ca_profile(path_length=0), root_key, now=NOW), root_key)
    below = ca_profile("Sub", path_length=None)
    with pytest.raises(IssuerError, match="path length is 0"):
        zero.check(below, now=NOW)
    one = Issuer(self_sign(ca_profile(path_length=1), root_key, now=NOW), root_key)
    for asked in (None, 1, 2):
        with pytest.raises(IssuerError, match="at most 0"):
            one.check(ca_profile("Sub", path_length=asked), now=NOW)
    sub = ca_profile("Sub", path_length=0)
    one.issue(build_csr(sub, rsa_key), sub, now=NOW).verify_directly_issued_by(one.certificate)


def _tampered(csr: x509.CertificateSigningRequest) -> x509.CertificateSigningRequest:
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01  # inside the signature value
    return x509.load_der_x509_csr(bytes(der))


def test_a_csr_whose_signature_does_not_verify_is_refused(
    root: Issuer, rsa_key: rsa.RSAPrivateKey
) -> None:
    csr = _tampered(build_csr(LEAF, rsa_key))
    with pytest.raises(CsrError, match="signature does not verify"):
        root.issue(csr, LEAF, now=NOW)


@pytest.mark.parametrize(
    ("asked", "message"),
    [
        (CertificateProfile(subject=Subject(common_name="other")), "asks for subject 'CN=other'"),
        (
            CertificateProfile(subject=LEAF.subject, dns_names=("leaf.example.com", "x.example")),
            "subject alternative names differ",
        ),
        (
            CertificateProfile(
                subject=LEAF.subject,
                dns_names=LEAF.dns_names,
                ip_addresses=LEAF.ip_addresses,
                uris=LEAF.uris,
                email_addresses=LEAF.email_addresses,
                usages=("digital signature", "server auth"),
            ),
            "KeyUsage",
        ),
    ],
)
def test_a_csr_asking_for_something_else_is_refused(
    leaf_key: ec.EllipticCurvePrivateKey, asked: CertificateProfile, message: str
) -> None:
    with pytest.raises(CsrError, match=message):
        verify_csr(build_csr(asked, leaf_key), LEAF)


def test_a_csr_asking_to_be_a_ca_is_refused_for_a_leaf(
    leaf_key: ec.EllipticCurvePrivateKey,
) -> None:
    leaf_named_like_ca = CertificateProfile(
        subject=Subject(common_name="Root", organizations=("Acme",))
    )
    with pytest.raises(CsrError, match="BasicConstraints"):
        verify_csr(build_csr(ca_profile(), leaf_key), leaf_named_like_ca)


def test_extended_usage_order_in_a_csr_does_not_matter(
    leaf_key: ec.EllipticCurvePrivateKey,
) -> None:
    fields = {"subject": Subject(common_name="x")}
    one = CertificateProfile(**fields, usages=("server auth", "client auth"))  # type: ignore[arg-type]
    other = CertificateProfile(**fields, usages=("client auth", "server auth"))  # type: ignore[arg-type]
    verify_csr(build_csr(one, leaf_key), other)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (rsa.generate_private_key(65537, 1024), "1024 bits"),  # noqa: S505 - weak on purpose
        (ec.generate_private_key(ec.SECP256K1()), "secp256k1"),
    ],
    ids=["rsa-1024", "secp256k1"],
)
def test_weak_or_unusual_csr_keys_are_refused(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, message: str
) -> None:
    with pytest.raises(CsrError, match=message):
        verify_csr(build_csr(LEAF, key), LEAF)


def test_self_signer_signs_only_for_its_own_key(
    root_key: ec.EllipticCurvePrivateKey, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    signer = SelfSigner(root_key)
    with pytest.raises(CsrError, match="signed by its own key"):
        signer.issue(build_csr(LEAF, leaf_key), LEAF, now=NOW)
    own = signer.issue(build_csr(LEAF, root_key), LEAF, now=NOW)
    own.verify_directly_issued_by(own)
    assert not extension(own, x509.BasicConstraints).value.ca


def test_issuing_for_a_key_the_caller_holds_matches_issuing_through_its_csr(
    root: Issuer, root_key: ec.EllipticCurvePrivateKey, leaf_key: ec.EllipticCurvePrivateKey
) -> None:
    through_csr = root.issue(build_csr(LEAF, leaf_key), LEAF, now=NOW)
    direct = root.issue_for_key(leaf_key.public_key(), LEAF, now=NOW)
    direct.verify_directly_issued_by(root.certificate)
    assert direct.public_key() == leaf_key.public_key()
    assert direct.subject == through_csr.subject
    assert list(direct.extensions) == list(through_csr.extensions)
    assert (direct.not_valid_before_utc, direct.not_valid_after_utc) == (
        through_csr.not_valid_before_utc,
        through_csr.not_valid_after_utc,
    )
    weak = rsa.generate_private_key(65537, 1024)  # noqa: S505 - weak on purpose
    with pytest.raises(CsrError, match="RSA key has 1024 bits"):
        root.issue_for_key(weak.public_key(), LEAF, now=NOW)
    signer = SelfSigner(root_key)
    with pytest.raises(CsrError, match="signed by its own key"):
        signer.issue_for_key(leaf_key.public_key(), LEAF, now=NOW)
    signer.issue_for_key(root_key.public_key(), LEAF, now=NOW).verify_directly_issued_by(
        signer.issue_for_key(root_key.public_key(), LEAF, now=NOW)
    )


def test_ed25519_signs_whole_and_refuses_a_hash() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    certificate = self_sign(ca_profile(), key, now=NOW)
    assert certificate.signature_hash_algorithm is None
    certificate.verify_directly_issued_by(certificate)
    with pytest.raises(ProfileError, match="Ed25519 signs without"):
        SelfSigner(key, SignatureScheme(hash="sha256"))


def test_pss_needs_an_rsa_key(root_key: ec.EllipticCurvePrivateKey) -> None:
    with pytest.raises(ProfileError, match="RSA-PSS needs an RSA signing key"):
        signature_parameters(root_key, SignatureScheme(rsa_pss=True))


@pytest.mark.parametrize(
    ("curve", "expected"),
    [
        (ec.SECP256R1(), hashes.SHA256),
        (ec.SECP384R1(), hashes.SHA384),
        (ec.SECP521R1(), hashes.SHA512),
    ],
)
def test_ecdsa_hash_follows_the_curve(curve: ec.EllipticCurve, expected: type) -> None:
    algorithm, rsa_padding = signature_parameters(ec.generate_private_key(curve), SignatureScheme())
    assert isinstance(algorithm, expected) and rsa_padding is None


def test_rsa_defaults_to_sha256_pkcs1v15(rsa_key: rsa.RSAPrivateKey) -> None:
    algorithm, rsa_padding = signature_parameters(rsa_key, SignatureScheme())
    assert isinstance(algorithm, hashes.SHA256) and isinstance(rsa_padding, padding.PKCS1v15)


def test_now_must_say_its_timezone(root: Issuer, leaf_key: ec.EllipticCurvePrivateKey) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        root.issue(build_csr(LEAF, leaf_key), LEAF, now=datetime.datetime(2030, 1, 1))


def test_csr_requests_the_profiles_extensions(leaf_key: ec.EllipticCurvePrivateKey) -> None:
    csr = build_csr(LEAF, leaf_key)
    assert csr.is_signature_valid
    oids = {e.oid for e in csr.extensions}
    assert oids == {
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.EXTENDED_KEY_USAGE,
    }
