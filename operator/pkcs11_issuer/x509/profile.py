"""What a certificate should say, in cert-manager's terms: the `CertificateProfile`.

A profile is checked when it is made, so one that exists is one that can be issued; nonsense
(a CA without `cert sign`, a duration under an hour, an unknown usage) is a `ProfileError`
that says what to change. Nothing here touches a key or an HSM.
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.x509.oid import (
    AuthorityInformationAccessOID,
    ExtendedKeyUsageOID,
    NameOID,
    ObjectIdentifier,
)

from pkcs11_issuer.x509.errors import ProfileError

# cert-manager's `usages` vocabulary, split into the two extensions that carry it.
KEY_USAGES: dict[str, str] = {
    "signing": "digital_signature",
    "digital signature": "digital_signature",
    "content commitment": "content_commitment",
    "key encipherment": "key_encipherment",
    "key agreement": "key_agreement",
    "data encipherment": "data_encipherment",
    "cert sign": "key_cert_sign",
    "crl sign": "crl_sign",
    "encipher only": "encipher_only",
    "decipher only": "decipher_only",
}
EXTENDED_KEY_USAGES: dict[str, ObjectIdentifier] = {
    "any": ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
    "server auth": ExtendedKeyUsageOID.SERVER_AUTH,
    "client auth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "code signing": ExtendedKeyUsageOID.CODE_SIGNING,
    "email protection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "s/mime": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "ipsec end system": ObjectIdentifier("1.3.6.1.5.5.7.3.5"),
    "ipsec tunnel": ObjectIdentifier("1.3.6.1.5.5.7.3.6"),
    "ipsec user": ObjectIdentifier("1.3.6.1.5.5.7.3.7"),
    "timestamping": ExtendedKeyUsageOID.TIME_STAMPING,
    "ocsp signing": ExtendedKeyUsageOID.OCSP_SIGNING,
    "microsoft sgc": ObjectIdentifier("1.3.6.1.4.1.311.10.3.3"),
    "netscape sgc": ObjectIdentifier("2.16.840.1.113730.4.1"),
}
USAGES = (*KEY_USAGES, *EXTENDED_KEY_USAGES)
DEFAULT_USAGES = ("digital signature", "key encipherment")

MIN_DURATION = datetime.timedelta(hours=1)
DEFAULT_DURATION = datetime.timedelta(hours=2160)  # cert-manager's 90 days
SIGNATURE_HASHES = ("sha256", "sha384", "sha512")

# Go's time.ParseDuration units, plus days for humans writing CA lifetimes.
_DURATION_UNITS_US: dict[str, Fraction] = {
    "ns": Fraction(1, 1000),
    "us": Fraction(1),
    "\u00b5s": Fraction(1),  # Go accepts both MICRO SIGN
    "\u03bcs": Fraction(1),  # and GREEK SMALL LETTER MU
    "ms": Fraction(1000),
    "s": Fraction(1_000_000),
    "m": Fraction(60_000_000),
    "h": Fraction(3_600_000_000),
    "d": Fraction(86_400_000_000),
}
_DURATION_PART = re.compile(
    r"(\d+(?:\.\d*)?|\.\d+)(" + "|".join(sorted(_DURATION_UNITS_US, key=len, reverse=True)) + ")"
)


def parse_duration(text: str) -> datetime.timedelta:
    """A Go duration as cert-manager writes it (`2160h`, `1h30m`, `90m`, `1.5h`), or days
    (`3650d`). Negative durations are refused."""
    value = text.strip()
    if value == "0":
        return datetime.timedelta(0)
    position = 0
    total = Fraction(0)
    for match in _DURATION_PART.finditer(value):
        if match.start() != position:
            break
        total += Fraction(match.group(1)) * _DURATION_UNITS_US[match.group(2)]
        position = match.end()
    if not value or position != len(value):
        raise ProfileError(
            f"invalid duration {text!r}: use a Go duration such as 2160h, 1h30m or 90m, "
            "or days such as 3650d"
        )
    return datetime.timedelta(microseconds=int(total))


def format_duration(duration: datetime.timedelta) -> str:
    """Hours, minutes and seconds, as Go prints a duration (`2160h0m0s`)."""
    seconds = int(duration.total_seconds())
    return f"{seconds // 3600}h{seconds % 3600 // 60}m{seconds % 60}s"


def _fail(message: str) -> None:
    raise ProfileError(message)


def _check_urls(values: Sequence[str], what: str) -> None:
    for value in values:
        parts = urlsplit(value)
        if not parts.scheme or not (parts.netloc or parts.path) or not value.isascii():
            _fail(f"{what}: {value!r} is not an absolute ASCII URI (such as http://host/path)")


@dataclass(frozen=True)
class Subject:
    """The distinguished name: cert-manager's `subject` plus `commonName`.

    Written in the order Go's crypto/x509 (and so cert-manager) writes it: C, ST, L, street,
    postalCode, O, OU, CN, serialNumber; each value its own RDN."""

    common_name: str | None = None
    organizations: tuple[str, ...] = ()
    countries: tuple[str, ...] = ()
    organizational_units: tuple[str, ...] = ()
    localities: tuple[str, ...] = ()
    provinces: tuple[str, ...] = ()
    street_addresses: tuple[str, ...] = ()
    postal_codes: tuple[str, ...] = ()
    serial_number: str | None = None

    def __post_init__(self) -> None:
        for name, oid in _SUBJECT_FIELDS:
            for value in _values(getattr(self, name)):
                if not value.strip():
                    _fail(f"subject {name}: empty values are not allowed")
                # X.520 upper bounds that cryptography does not enforce for us.
                limit = _SUBJECT_LIMITS.get(oid)
                if limit is not None and len(value) > limit:
                    _fail(f"subject {name}: {value!r} is longer than {limit} characters")
        for country in self.countries:
            if len(country) != 2 or not country.isascii() or not country.isalpha():
                _fail(f"subject countries: {country!r} is not a two-letter ISO 3166 code")

    @property
    def is_empty(self) -> bool:
        return not any(_values(getattr(self, name)) for name, _oid in _SUBJECT_FIELDS)

    def to_name(self) -> x509.Name:
        return self._name

    @functools.cached_property
    def _name(self) -> x509.Name:
        # Cached: every issuance compares and writes it; a frozen profile never changes it.
        return x509.Name(
            [
                x509.RelativeDistinguishedName([x509.NameAttribute(oid, value)])
                for name, oid in _SUBJECT_FIELDS
                for value in _values(getattr(self, name))
            ]
        )


def _values(value: str | tuple[str, ...] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else value


_SUBJECT_FIELDS: tuple[tuple[str, ObjectIdentifier], ...] = (
    ("countries", NameOID.COUNTRY_NAME),
    ("provinces", NameOID.STATE_OR_PROVINCE_NAME),
    ("localities", NameOID.LOCALITY_NAME),
    ("street_addresses", NameOID.STREET_ADDRESS),
    ("postal_codes", NameOID.POSTAL_CODE),
    ("organizations", NameOID.ORGANIZATION_NAME),
    ("organizational_units", NameOID.ORGANIZATIONAL_UNIT_NAME),
    ("common_name", NameOID.COMMON_NAME),
    ("serial_number", NameOID.SERIAL_NUMBER),
)
_SUBJECT_LIMITS = {
    NameOID.COMMON_NAME: 64,
    NameOID.ORGANIZATION_NAME: 64,
    NameOID.ORGANIZATIONAL_UNIT_NAME: 64,
    NameOID.LOCALITY_NAME: 128,
    NameOID.STATE_OR_PROVINCE_NAME: 128,
    NameOID.SERIAL_NUMBER: 64,
}


@dataclass(frozen=True)
class NameConstraintItems:
    """cert-manager's `NameConstraintItem`: DNS domains, CIDR ranges, email addresses or
    domains, and URI domains."""

    dns_domains: tuple[str, ...] = ()
    ip_ranges: tuple[str, ...] = ()
    email_addresses: tuple[str, ...] = ()
    uri_domains: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for cidr in self.ip_ranges:
            try:
                ipaddress.ip_network(cidr, strict=True)
            except ValueError as error:
                _fail(f"name constraint ip range {cidr!r}: {error}")
        for name in (*self.dns_domains, *self.email_addresses, *self.uri_domains):
            if not name or not name.isascii() or any(c.isspace() for c in name):
                _fail(f"name constraint {name!r} must be non-empty ASCII without spaces")

    def general_names(self) -> list[x509.GeneralName]:
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in self.dns_domains]
        names += [x509.IPAddress(ipaddress.ip_network(c)) for c in self.ip_ranges]
        names += [x509.RFC822Name(e) for e in self.email_addresses]
        names += [x509.UniformResourceIdentifier(u) for u in self.uri_domains]
        return names


@dataclass(frozen=True)
class NameConstraints:
    """Only for CA certificates. Critical by default, as RFC 5280 requires (cert-manager's
    `critical` field defaults to false; set it explicitly when mapping a resource)."""

    permitted: NameConstraintItems = field(default_factory=NameConstraintItems)
    excluded: NameConstraintItems = field(default_factory=NameConstraintItems)
    critical: bool = True

    def __post_init__(self) -> None:
        if not self.permitted.general_names() and not self.excluded.general_names():
            _fail("name constraints need at least one permitted or excluded name")

    def extension(self) -> x509.NameConstraints:
        return x509.NameConstraints(
            permitted_subtrees=self.permitted.general_names() or None,
            excluded_subtrees=self.excluded.general_names() or None,
        )


def key_usage(usages: Iterable[str]) -> x509.KeyUsage:
    """The keyUsage extension for cert-manager usages (extended usages are ignored here)."""
    flags = {flag: False for flag in set(KEY_USAGES.values())}
    for usage in usages:
        if usage in KEY_USAGES:
            flags[KEY_USAGES[usage]] = True
    if (flags["encipher_only"] or flags["decipher_only"]) and not flags["key_agreement"]:
        _fail('"encipher only" and "decipher only" need "key agreement" as well')
    return x509.KeyUsage(**flags)


def extended_key_usage(usages: Iterable[str]) -> x509.ExtendedKeyUsage | None:
    """The extendedKeyUsage extension for cert-manager usages, or None when none is asked."""
    oids: list[ObjectIdentifier] = []
    for usage in usages:
        oid = EXTENDED_KEY_USAGES.get(usage)
        if oid is not None and oid not in oids:
            oids.append(oid)
    return x509.ExtendedKeyUsage(oids) if oids else None


@dataclass(frozen=True)
class SignatureScheme:
    """How a signer signs. `hash=None` picks the hash from the signing key as Go and
    cert-manager do: SHA-256 for RSA and P-256, SHA-384 for P-384, SHA-512 for P-521, none for
    Ed25519. `rsa_pss` signs with RSASSA-PSS (MGF1 over the same hash, salt as long as the
    hash, as Go writes it) instead of PKCS#1 v1.5; only RSA keys can."""

    hash: str | None = None
    rsa_pss: bool = False

    def __post_init__(self) -> None:
        if self.hash not in (None, *SIGNATURE_HASHES):
            _fail(
                f"signature hash {self.hash!r} is not supported "
                f"(use one of {', '.join(SIGNATURE_HASHES)})"
            )


@dataclass(frozen=True)
class CertificateProfile:
    """Everything of a cert-manager `Certificate` (and of the issuer's settings) that shapes
    the certificate. Checked on construction; see the module docstring.

    `usages=None` means cert-manager's default, "digital signature" and "key encipherment",
    with "cert sign" added for a CA as cert-manager does. An explicit list for a CA must name
    "cert sign" itself. How the certificate is signed is the signer's business, not the
    profile's: see `SignatureScheme`.
    """

    subject: Subject = field(default_factory=Subject)
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    uris: tuple[str, ...] = ()
    email_addresses: tuple[str, ...] = ()
    duration: datetime.timedelta = DEFAULT_DURATION
    usages: tuple[str, ...] | None = None
    is_ca: bool = False
    max_path_length: int | None = None
    name_constraints: NameConstraints | None = None
    crl_distribution_points: tuple[str, ...] = ()
    ocsp_servers: tuple[str, ...] = ()
    issuing_certificate_urls: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.duration < MIN_DURATION:
            _fail(
                f"duration {format_duration(self.duration)} is shorter than the minimum of "
                f"{format_duration(MIN_DURATION)}"
            )
        self._check_usages()
        self._check_names()
        if self.max_path_length is not None:
            if not self.is_ca:
                _fail("a path length is only meaningful for a CA certificate (isCA: true)")
            if self.max_path_length < 0:
                _fail(f"path length {self.max_path_length} is negative")
        if self.name_constraints is not None and not self.is_ca:
            _fail("name constraints are only meaningful for a CA certificate (isCA: true)")
        _check_urls(self.crl_distribution_points, "CRL distribution point")
        _check_urls(self.ocsp_servers, "OCSP server")
        _check_urls(self.issuing_certificate_urls, "issuing certificate URL")

    def _check_usages(self) -> None:
        unknown = [u for u in self.usages or () if u not in USAGES]
        if unknown:
            _fail(
                f"unknown usage(s) {', '.join(map(repr, unknown))}; cert-manager's usages are "
                + ", ".join(f'"{u}"' for u in USAGES)
            )
        effective = self.effective_usages
        key_usage(effective)  # refuses encipher/decipher only without key agreement
        if self.is_ca and "cert sign" not in effective:
            _fail('a CA certificate (isCA: true) needs the "cert sign" usage to sign anything')
        if not self.is_ca and "cert sign" in effective:
            _fail('"cert sign" is only for CA certificates; set isCA: true or drop the usage')

    def _check_names(self) -> None:
        if self.is_ca and self.subject.is_empty:
            _fail("a CA certificate needs a subject (at least a common name or organization)")
        if self.subject.is_empty and not (
            self.dns_names or self.ip_addresses or self.uris or self.email_addresses
        ):
            _fail(
                "the certificate names nothing: set a common name or subject, or at least one "
                "of dnsNames, ipAddresses, uris, emailAddresses"
            )
        for name in self.dns_names:
            if not name or not name.isascii() or any(c.isspace() for c in name):
                _fail(f"dnsNames: {name!r} is not an ASCII DNS name (IDNs go as xn-- labels)")
        for address in self.ip_addresses:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                _fail(f"ipAddresses: {address!r} is not an IPv4 or IPv6 address")
        _check_urls(self.uris, "uris")
        for email in self.email_addresses:
            local, at, domain = email.rpartition("@")
            if not at or not local or not domain or not email.isascii():
                _fail(f"emailAddresses: {email!r} is not an ASCII email address")

    @property
    def effective_usages(self) -> tuple[str, ...]:
        if self.usages is not None:
            return self.usages
        return (*DEFAULT_USAGES, "cert sign") if self.is_ca else DEFAULT_USAGES

    def general_names(self) -> list[x509.GeneralName]:
        """The subjectAltName entries, in cert-manager's order: DNS, IP, URI, email."""
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in self.dns_names]
        names += [x509.IPAddress(ipaddress.ip_address(a)) for a in self.ip_addresses]
        names += [x509.UniformResourceIdentifier(u) for u in self.uris]
        names += [x509.RFC822Name(e) for e in self.email_addresses]
        return names

    @functools.cached_property
    def requested_extensions(self) -> tuple[tuple[x509.ExtensionType, bool], ...]:
        """(extension, critical) for what a CSR for this profile requests and the certificate
        carries: subjectAltName, basicConstraints, keyUsage, extendedKeyUsage. Cached, as
        every issuance needs it twice and a frozen profile never changes it."""
        extensions: list[tuple[x509.ExtensionType, bool]] = []
        names = self.general_names()
        if names:
            # RFC 5280 4.2.1.6: critical when the subject is empty, as cert-manager does.
            extensions.append((x509.SubjectAlternativeName(names), self.subject.is_empty))
        path_length = self.max_path_length if self.is_ca else None
        extensions.append((x509.BasicConstraints(ca=self.is_ca, path_length=path_length), True))
        extensions.append((key_usage(self.effective_usages), True))
        eku = extended_key_usage(self.effective_usages)
        if eku is not None:
            extensions.append((eku, False))
        return tuple(extensions)

    @functools.cached_property
    def other_extensions(self) -> tuple[tuple[x509.ExtensionType, bool], ...]:
        """(extension, critical) that only the certificate carries, besides the key
        identifiers: name constraints, CRL distribution points, authority information access
        (OCSP servers, then issuing certificate URLs)."""
        extensions: list[tuple[x509.ExtensionType, bool]] = []
        if self.name_constraints is not None:
            constraints = self.name_constraints
            extensions.append((constraints.extension(), constraints.critical))
        if self.crl_distribution_points:
            points = [
                x509.DistributionPoint([x509.UniformResourceIdentifier(url)], None, None, None)
                for url in self.crl_distribution_points
            ]
            extensions.append((x509.CRLDistributionPoints(points), False))
        access = [
            x509.AccessDescription(AuthorityInformationAccessOID.OCSP, _uri(url))
            for url in self.ocsp_servers
        ] + [
            x509.AccessDescription(AuthorityInformationAccessOID.CA_ISSUERS, _uri(url))
            for url in self.issuing_certificate_urls
        ]
        if access:
            extensions.append((x509.AuthorityInformationAccess(access), False))
        return tuple(extensions)


def _uri(url: str) -> x509.UniformResourceIdentifier:
    return x509.UniformResourceIdentifier(url)
