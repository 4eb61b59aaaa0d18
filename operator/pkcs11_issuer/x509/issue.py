"""Signing: CSRs by the requesting key, certificates by an issuer, all through one path.

Issuance always goes through a PKCS#10 CSR. The key a certificate is for signs the CSR (proof
of possession); `verify_csr` checks that signature, the key, and that the CSR asks for exactly
what the profile says; then the issuer's key signs a certificate built from the profile and
the CSR's public key. `Issuer` is a CA (certificate + key); `SelfSigner` signs with the CSR's
own key. Both have `issue(csr, profile)`, so the operator treats them alike.

Keys are any `cryptography` private keys; in the operator they are the HSM keys of
`pkcs11_issuer.x509.keys`, so no private key ever exists outside the HSM.
"""

from __future__ import annotations

import datetime
import secrets

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from pkcs11_issuer.x509.errors import CsrError, IssuerError, ProfileError
from pkcs11_issuer.x509.profile import CertificateProfile, SignatureScheme

SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
SubjectPublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

SERIAL_BITS = 128  # as cert-manager (Go) draws them; CA/B Forum asks for at least 64
RSA_KEY_SIZES = range(2048, 8193)
EC_CURVES = ("secp256r1", "secp384r1", "secp521r1")
_HASHES: dict[str, hashes.HashAlgorithm] = {
    "sha256": hashes.SHA256(),
    "sha384": hashes.SHA384(),
    "sha512": hashes.SHA512(),
}
_CURVE_HASHES = {"secp256r1": "sha256", "secp384r1": "sha384", "secp521r1": "sha512"}
BY_KEY = SignatureScheme()  # the hash the key's type calls for, PKCS#1 v1.5 for RSA


def random_serial_number() -> int:
    """128 random bits, never zero: RFC 5280 wants a positive serial of at most 20 octets."""
    serial = 0
    while serial == 0:
        serial = secrets.randbits(SERIAL_BITS)
    return serial


def signature_parameters(
    key: SigningKey, scheme: SignatureScheme
) -> tuple[hashes.HashAlgorithm | None, padding.PSS | padding.PKCS1v15 | None]:
    """The hash and RSA padding `key` signs with under `scheme`; a scheme the key cannot
    follow (PSS with an EC key, a hash with Ed25519) is a `ProfileError`."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        if scheme.hash is not None or scheme.rsa_pss:
            raise ProfileError("Ed25519 signs without a separate hash or padding; set neither")
        return None, None
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if scheme.rsa_pss:
            raise ProfileError("RSA-PSS needs an RSA signing key, not an EC key")
        return _HASHES[scheme.hash or _CURVE_HASHES.get(key.curve.name, "sha256")], None
    algorithm = _HASHES[scheme.hash or "sha256"]
    if scheme.rsa_pss:
        return algorithm, padding.PSS(padding.MGF1(algorithm), algorithm.digest_size)
    return algorithm, padding.PKCS1v15()


def subject_public_key_info(key: SubjectPublicKey | CertificatePublicKeyTypes) -> bytes:
    """DER SubjectPublicKeyInfo: how two keys are compared, whatever their classes."""
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def build_csr(
    profile: CertificateProfile, key: SigningKey, scheme: SignatureScheme = BY_KEY
) -> x509.CertificateSigningRequest:
    """A PKCS#10 request for `profile`, signed by the key the certificate will be for: the
    subject, and as requested extensions the SANs, basic constraints and both usages."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(profile.subject.to_name())
    for extension, critical in profile.requested_extensions:
        builder = builder.add_extension(extension, critical)
    algorithm, rsa_padding = signature_parameters(key, scheme)
    # cryptography types `algorithm` as a union of concrete hash classes, not HashAlgorithm.
    return builder.sign(key, algorithm, rsa_padding=rsa_padding)  # type: ignore[arg-type]


def _check_public_key(key: CertificatePublicKeyTypes) -> SubjectPublicKey:
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size not in RSA_KEY_SIZES:
            raise CsrError(f"the CSR's RSA key has {key.key_size} bits; 2048 to 8192 are accepted")
        return key
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in EC_CURVES:
            raise CsrError(f"the CSR's EC key is on {key.curve.name}; P-256, P-384, P-521 are")
        return key
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    raise CsrError(f"the CSR's key type {type(key).__name__} is not accepted")


def _requested(
    csr: x509.CertificateSigningRequest, extension: type[x509.ExtensionType]
) -> x509.ExtensionType | None:
    try:
        return csr.extensions.get_extension_for_class(extension).value
    except x509.ExtensionNotFound:
        return None


def verify_csr(
    csr: x509.CertificateSigningRequest, profile: CertificateProfile
) -> SubjectPublicKey:
    """Refuse a CSR that its own key did not sign, whose key is unacceptable, or that asks for
    another subject, other names, usages or CA status than `profile`; else its public key."""
    try:
        public_key = csr.public_key()
    except ValueError as error:
        raise CsrError(f"the CSR's public key cannot be read: {error}") from error
    checked = _check_public_key(public_key)
    if not csr.is_signature_valid:
        raise CsrError("the CSR's signature does not verify with the public key it carries")
    wanted = profile.subject.to_name()
    if csr.subject != wanted:
        raise CsrError(
            f"the CSR asks for subject {csr.subject.rfc4514_string()!r}, "
            f"the request for {wanted.rfc4514_string()!r}"
        )
    wanted_extensions = {type(e): e for e, _critical in profile.requested_extensions}
    san = _requested(csr, x509.SubjectAlternativeName)
    asked = set(san) if isinstance(san, x509.SubjectAlternativeName) else set()
    wanted_names = wanted_extensions.get(x509.SubjectAlternativeName)
    expected = set(wanted_names) if isinstance(wanted_names, x509.SubjectAlternativeName) else set()
    if asked != expected:
        raise CsrError(
            "the CSR's subject alternative names differ from the request's: "
            f"{sorted(map(str, asked ^ expected))}"
        )
    for kind, extension in wanted_extensions.items():
        if kind is x509.SubjectAlternativeName:
            continue
        requested = _requested(csr, kind)
        if requested is None:
            continue
        same = (
            set(requested) == set(extension)  # order is not meaningful for usages
            if isinstance(requested, x509.ExtendedKeyUsage)
            and isinstance(extension, x509.ExtendedKeyUsage)
            else requested == extension
        )
        if not same:
            raise CsrError(f"the CSR asks for {requested}, the request for {extension}")
    return checked


def _key_identifier(
    certificate: x509.Certificate, public_key: SubjectPublicKey
) -> x509.AuthorityKeyIdentifier:
    try:
        ski = certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key)
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _build(
    profile: CertificateProfile,
    public_key: SubjectPublicKey,
    *,
    issuer_name: x509.Name,
    authority_key_id: x509.AuthorityKeyIdentifier,
    signing_key: SigningKey,
    scheme: SignatureScheme,
    now: datetime.datetime,
    not_after_limit: datetime.datetime | None,
) -> x509.Certificate:
    not_before = now.astimezone(datetime.UTC).replace(microsecond=0)
    not_after = not_before + profile.duration
    if not_after_limit is not None and not_after > not_after_limit:
        not_after = not_after_limit  # cert-manager's rule: a certificate never outlives its CA
    builder = (
        x509.CertificateBuilder()
        .subject_name(profile.subject.to_name())
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    for extension, critical in profile.requested_extensions:
        builder = builder.add_extension(extension, critical)
    builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), False)
    builder = builder.add_extension(authority_key_id, False)
    for extension, critical in profile.other_extensions:
        builder = builder.add_extension(extension, critical)
    algorithm, rsa_padding = signature_parameters(signing_key, scheme)
    return builder.sign(signing_key, algorithm, rsa_padding=rsa_padding)  # type: ignore[arg-type]


def _now(now: datetime.datetime | None) -> datetime.datetime:
    if now is None:
        return datetime.datetime.now(datetime.UTC)
    if now.tzinfo is None:
        raise ValueError("`now` must be timezone-aware")
    return now


class SelfSigner:
    """Signs each certificate with the key the CSR is for (cert-manager's `selfSigned`)."""

    def __init__(self, key: SigningKey, scheme: SignatureScheme = BY_KEY) -> None:
        signature_parameters(key, scheme)  # refuse a scheme the key cannot follow now
        self.key = key
        self.scheme = scheme

    def issue(
        self,
        csr: x509.CertificateSigningRequest,
        profile: CertificateProfile,
        *,
        now: datetime.datetime | None = None,
    ) -> x509.Certificate:
        return self.issue_for_key(verify_csr(csr, profile), profile, now=now)

    def issue_for_key(
        self,
        subject_key: SubjectPublicKey,
        profile: CertificateProfile,
        *,
        now: datetime.datetime | None = None,
    ) -> x509.Certificate:
        """As `issue`, for a public key whose private half the caller holds itself (a key it
        just generated in its own HSM), where a CSR would only prove what it already knows."""
        public_key = self.key.public_key()
        if subject_public_key_info(subject_key) != subject_public_key_info(public_key):
            raise CsrError("a self-signed certificate is signed by its own key; this is another")
        return _build(
            profile,
            public_key,
            issuer_name=profile.subject.to_name(),
            authority_key_id=x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key),
            signing_key=self.key,
            scheme=self.scheme,
            now=_now(now),
            not_after_limit=None,
        )


def self_sign(
    profile: CertificateProfile,
    key: SigningKey,
    scheme: SignatureScheme = BY_KEY,
    *,
    now: datetime.datetime | None = None,
) -> x509.Certificate:
    """A self-signed certificate (a root CA, or a `selfSigned` leaf): one signature."""
    return SelfSigner(key, scheme).issue_for_key(key.public_key(), profile, now=now)


class Issuer:
    """A CA that signs: its certificate and the key that certificate is for.

    Refuses, on construction, a certificate that is not a CA, lacks keyCertSign, or whose
    public key is not `key`'s; and on issuance, a CA that is not valid at that moment or whose
    path length leaves no room for the CA certificate asked for. A certificate that would
    outlive the issuer ends when the issuer does, as cert-manager does it."""

    def __init__(
        self,
        certificate: x509.Certificate,
        key: SigningKey,
        scheme: SignatureScheme = BY_KEY,
    ) -> None:
        subject = certificate.subject.rfc4514_string()
        try:
            constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
        except x509.ExtensionNotFound:
            constraints = None
        if constraints is None or not constraints.value.ca:
            raise IssuerError(f"the issuer certificate {subject!r} is not a CA certificate")
        try:
            usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
        except x509.ExtensionNotFound:
            usage = None
        if usage is not None and not usage.key_cert_sign:
            raise IssuerError(f"the issuer certificate {subject!r} lacks the keyCertSign usage")
        if subject_public_key_info(certificate.public_key()) != subject_public_key_info(
            key.public_key()
        ):
            raise IssuerError(
                f"the issuer certificate {subject!r} is for another key than the one that "
                f"would sign ({key!r}); pair the certificate with its own key"
            )
        signature_parameters(key, scheme)
        self.certificate = certificate
        self.key = key
        self.scheme = scheme
        self.path_length = constraints.value.path_length
        self._authority_key_id = _key_identifier(certificate, key.public_key())

    def check(self, profile: CertificateProfile, *, now: datetime.datetime | None = None) -> None:
        """Refuse what `issue` would refuse for `profile` whatever the CSR: an issuer that is
        not valid at `now`, or a path length that leaves no room for the CA asked for."""
        moment = _now(now)
        certificate = self.certificate
        start, end = certificate.not_valid_before_utc, certificate.not_valid_after_utc
        if not start <= moment < end:
            raise IssuerError(
                f"the issuer certificate {certificate.subject.rfc4514_string()!r} is not valid "
                f"now: it is valid from {start:%Y-%m-%d %H:%M:%S}Z to {end:%Y-%m-%d %H:%M:%S}Z"
            )
        limit = self.path_length
        if profile.is_ca and limit is not None:
            if limit == 0:
                raise IssuerError(
                    "the issuer's path length is 0: it may only issue end-entity certificates"
                )
            if profile.max_path_length is None or profile.max_path_length >= limit:
                raise IssuerError(
                    f"the issuer's path length is {limit}, so a CA below it needs a path "
                    f"length of at most {limit - 1}"
                )

    def issue(
        self,
        csr: x509.CertificateSigningRequest,
        profile: CertificateProfile,
        *,
        now: datetime.datetime | None = None,
    ) -> x509.Certificate:
        return self.issue_for_key(verify_csr(csr, profile), profile, now=now)

    def issue_for_key(
        self,
        subject_key: SubjectPublicKey,
        profile: CertificateProfile,
        *,
        now: datetime.datetime | None = None,
    ) -> x509.Certificate:
        """As `issue`, for a public key whose private half the caller holds itself (a key it
        just generated in its own HSM), where a CSR would only prove what it already knows."""
        public_key = _check_public_key(subject_key)
        moment = _now(now)
        self.check(profile, now=moment)
        return _build(
            profile,
            public_key,
            issuer_name=self.certificate.subject,
            authority_key_id=self._authority_key_id,
            signing_key=self.key,
            scheme=self.scheme,
            now=moment,
            not_after_limit=self.certificate.not_valid_after_utc,
        )


Signer = Issuer | SelfSigner
