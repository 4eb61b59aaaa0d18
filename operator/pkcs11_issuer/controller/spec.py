"""Certificate, Issuer and ClusterIssuer specs read into typed, checked values.

The CRDs' schemas and CEL rules refuse most mistakes at admission, but nothing here relies on
them: a CRD can be older than the operator, or installed on a cluster without CEL. So every
type and rule is checked again, and a `SpecError` names the spec field it is about. Fields this
module does not know are ignored, as the API server prunes them anyway. Nothing here does I/O.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any, Literal, TypeVar

from pkcs11_issuer.hsm.errors import ConfigurationError
from pkcs11_issuer.hsm.keys import KeyAlgorithm, KeySpec
from pkcs11_issuer.x509 import (
    DEFAULT_DURATION,
    MIN_DURATION,
    USAGES,
    CertificateProfile,
    NameConstraintItems,
    NameConstraints,
    ProfileError,
    Subject,
    format_duration,
    parse_duration,
)

GROUP = "pkcs11-issuer.io"
ISSUER_KINDS = ("Issuer", "ClusterIssuer")
MAX_DURATION = timedelta(hours=876_000)
# Labels and annotations the operator writes on Secrets itself.
RESERVED_PREFIX = f"{GROUP}/"

RotationPolicy = Literal["Always", "Never"]
DeletionPolicy = Literal["Delete", "Retain"]
ROTATION_POLICIES: tuple[RotationPolicy, ...] = ("Always", "Never")
DELETION_POLICIES: tuple[DeletionPolicy, ...] = ("Delete", "Retain")

# A Kubernetes object name (DNS-1123 subdomain), as the CRDs' patterns say.
_OBJECT_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_OBJECT_NAME_MAX = 253
# The CRD's own test for a pkcs11 URI that names one existing key (id or object in the path).
_NAMES_ONE_KEY = re.compile(r"pkcs11:([^;?]*;)*(id|object)=")

# Spec key -> attribute, for the string lists of `subject` and of name constraint items.
_SUBJECT_LISTS = (
    ("organizations", "organizations"),
    ("countries", "countries"),
    ("organizationalUnits", "organizational_units"),
    ("localities", "localities"),
    ("provinces", "provinces"),
    ("streetAddresses", "street_addresses"),
    ("postalCodes", "postal_codes"),
)
_CONSTRAINT_LISTS = (
    ("dnsDomains", "dns_domains"),
    ("ipRanges", "ip_ranges"),
    ("emailAddresses", "email_addresses"),
    ("uriDomains", "uri_domains"),
)

_Choice = TypeVar("_Choice", bound=str)

# A valid profile for `_urls` to put one URL at a time into.
_URL_CHECK = CertificateProfile(subject=Subject(common_name="URL check"))


class SpecError(ValueError):
    """A spec the operator cannot act on. `field` is its path, such as
    `spec.privateKey.size`; the message starts with it."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


@dataclass(frozen=True)
class IssuerRef:
    name: str
    kind: str
    group: str

    def key(self, namespace: str) -> tuple[str, str | None, str]:
        """(kind, namespace, name) of the issuer; a ClusterIssuer has no namespace."""
        return (self.kind, None if self.kind == "ClusterIssuer" else namespace, self.name)


@dataclass(frozen=True)
class PrivateKeySettings:
    spec: KeySpec
    rotation_policy: RotationPolicy
    deletion_policy: DeletionPolicy
    pkcs11: str | None


@dataclass(frozen=True)
class CertificateSpec:
    secret_name: str
    issuer_ref: IssuerRef
    profile: CertificateProfile
    renew_before: timedelta | None
    private_key: PrivateKeySettings
    secret_labels: Mapping[str, str]
    secret_annotations: Mapping[str, str]

    def digest(self) -> str:
        """Hex SHA-256 of everything that shapes the certificate or its key.

        A canonical JSON that names each field itself, so that a new profile field does not
        re-issue every certificate on upgrade; over the values as parsed, defaults filled in,
        so that spelling a default out (or a CRD starting to default it) does not either. The
        Secret's labels and annotations, renewBefore and the key's policies are left out:
        changing them must not replace a certificate or a key."""
        profile = self.profile
        subject = profile.subject
        constraints = profile.name_constraints
        shape = {
            "commonName": subject.common_name,
            "subject": {
                **{key: getattr(subject, attribute) for key, attribute in _SUBJECT_LISTS},
                "serialNumber": subject.serial_number,
            },
            "dnsNames": profile.dns_names,
            "ipAddresses": profile.ip_addresses,
            "uris": profile.uris,
            "emailAddresses": profile.email_addresses,
            "durationMicroseconds": profile.duration // timedelta(microseconds=1),
            "usages": profile.effective_usages,
            "isCA": profile.is_ca,
            "nameConstraints": None
            if constraints is None
            else {
                "critical": constraints.critical,
                "permitted": _constraint_shape(constraints.permitted),
                "excluded": _constraint_shape(constraints.excluded),
            },
            "issuerRef": dataclasses.asdict(self.issuer_ref),
            "privateKey": {
                "algorithm": self.private_key.spec.algorithm.value,
                "size": self.private_key.spec.size,
                "pkcs11": self.private_key.pkcs11,
            },
        }
        canonical = json.dumps(shape, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(canonical.encode("ascii")).hexdigest()

    def renewal_time(self, not_before: datetime, not_after: datetime) -> datetime:
        """When the certificate valid from `not_before` to `not_after` is renewed, as
        cert-manager computes it: `renewBefore` ahead of expiry, or a third of the lifetime
        when renewBefore is unset or not shorter than the lifetime the issuer granted (an
        issuer clamps notAfter to its own)."""
        lifetime = not_after - not_before
        renew_before = self.renew_before
        if renew_before is None or renew_before >= lifetime:
            renew_before = lifetime / 3
        # Whole seconds, as cert-manager: the time is stored in status at that precision and
        # compared again later, so a finer value could look not yet due once read back.
        return (not_after - renew_before).replace(microsecond=0)


def _constraint_shape(items: NameConstraintItems) -> dict[str, tuple[str, ...]]:
    return {key: getattr(items, attribute) for key, attribute in _CONSTRAINT_LISTS}


@dataclass(frozen=True)
class CaSettings:
    pkcs11: str | None
    secret_name: str | None
    crl_distribution_points: tuple[str, ...]
    ocsp_servers: tuple[str, ...]
    issuing_certificate_urls: tuple[str, ...]


@dataclass(frozen=True)
class IssuerSpec:
    """`self_signed`, or a `ca`. `crl_distribution_points` are the issuer's, whichever kind
    it is (for a CA, the same as `ca.crl_distribution_points`)."""

    self_signed: bool
    ca: CaSettings | None
    crl_distribution_points: tuple[str, ...]

    def stamp(self, profile: CertificateProfile) -> CertificateProfile:
        """`profile` with the URLs this issuer writes into what it signs (and no others)."""
        return dataclasses.replace(
            profile,
            crl_distribution_points=self.crl_distribution_points,
            ocsp_servers=self.ca.ocsp_servers if self.ca else (),
            issuing_certificate_urls=self.ca.issuing_certificate_urls if self.ca else (),
        )


def parse_certificate_spec(spec: Mapping[str, Any]) -> CertificateSpec:
    """A Certificate's `spec`, checked, with cert-manager's defaults filled in."""
    spec = _object(spec, "spec")
    duration = _duration(spec, "duration", "spec.duration")
    if duration is None:
        duration = DEFAULT_DURATION
    elif not MIN_DURATION <= duration <= MAX_DURATION:
        raise SpecError(
            "spec.duration",
            f"{format_duration(duration)} is out of range: use between "
            f"{format_duration(MIN_DURATION)} and {format_duration(MAX_DURATION)}",
        )
    renew_before = _duration(spec, "renewBefore", "spec.renewBefore")
    if renew_before is not None and not timedelta(0) < renew_before < duration:
        raise SpecError(
            "spec.renewBefore",
            f"{format_duration(renew_before)} must be longer than 0s and shorter than the "
            f"duration ({format_duration(duration)})",
        )
    template = _section(spec, "secretTemplate", "spec.secretTemplate") or {}
    return CertificateSpec(
        secret_name=_object_name(
            _required(spec, "secretName", "spec.secretName"), "spec.secretName"
        ),
        issuer_ref=_issuer_ref(spec),
        profile=_profile(spec, duration),
        renew_before=renew_before,
        private_key=_private_key(spec),
        secret_labels=_string_map(template, "labels", "spec.secretTemplate.labels"),
        secret_annotations=_string_map(template, "annotations", "spec.secretTemplate.annotations"),
    )


def parse_issuer_spec(spec: Mapping[str, Any]) -> IssuerSpec:
    """An Issuer's or ClusterIssuer's `spec`: exactly one of `selfSigned` and `ca`."""
    spec = _object(spec, "spec")
    self_signed = _section(spec, "selfSigned", "spec.selfSigned")
    ca = _section(spec, "ca", "spec.ca")
    if self_signed is not None and ca is not None:
        raise SpecError("spec", "set one issuer type, selfSigned or ca, not both")
    if self_signed is not None:
        return IssuerSpec(
            self_signed=True,
            ca=None,
            crl_distribution_points=_urls(
                self_signed, "crlDistributionPoints", "spec.selfSigned", "crl_distribution_points"
            ),
        )
    if ca is None:
        raise SpecError("spec", "set an issuer type: selfSigned or ca")
    pkcs11 = _pkcs11(ca, "spec.ca")
    secret_name = _string(ca, "secretName", "spec.ca.secretName")
    if secret_name is not None:
        _object_name(secret_name, "spec.ca.secretName")
    if pkcs11 is None and secret_name is None:
        raise SpecError(
            "spec.ca",
            "set pkcs11 (the CA key's URI), secretName (the Secret with the CA certificate), "
            "or both",
        )
    settings = CaSettings(
        pkcs11=pkcs11,
        secret_name=secret_name,
        crl_distribution_points=_urls(
            ca, "crlDistributionPoints", "spec.ca", "crl_distribution_points"
        ),
        ocsp_servers=_urls(ca, "ocspServers", "spec.ca", "ocsp_servers"),
        issuing_certificate_urls=_urls(
            ca, "issuingCertificateURLs", "spec.ca", "issuing_certificate_urls"
        ),
    )
    return IssuerSpec(
        self_signed=False, ca=settings, crl_distribution_points=settings.crl_distribution_points
    )


def _profile(spec: Mapping[str, Any], duration: timedelta) -> CertificateProfile:
    dns_names = _strings(spec, "dnsNames", "spec.dnsNames")
    ip_addresses = _strings(spec, "ipAddresses", "spec.ipAddresses")
    uris = _strings(spec, "uris", "spec.uris")
    email_addresses = _strings(spec, "emailAddresses", "spec.emailAddresses")
    subject = _subject(spec)
    # As cert-manager: the subject's other attributes do not identify anything by themselves.
    if not (subject.common_name or dns_names or ip_addresses or uris or email_addresses):
        raise SpecError(
            "spec",
            "the certificate must name something: set at least one of commonName, dnsNames, "
            "ipAddresses, uris or emailAddresses",
        )
    usages = _usages(spec)
    is_ca = _bool(spec, "isCA", "spec.isCA", default=False)
    name_constraints = _name_constraints(spec)
    with _reported_at("spec"):
        return CertificateProfile(
            subject=subject,
            dns_names=dns_names,
            ip_addresses=ip_addresses,
            uris=uris,
            email_addresses=email_addresses,
            duration=duration,
            usages=usages,
            is_ca=is_ca,
            name_constraints=name_constraints,
        )


def _subject(spec: Mapping[str, Any]) -> Subject:
    # Go cannot tell an empty string from an absent one, so cert-manager reads "" as unset.
    common_name = _string(spec, "commonName", "spec.commonName") or None
    # Alone first, so that a bad common name is reported at its own field.
    with _reported_at("spec.commonName"):
        Subject(common_name=common_name)
    section = _section(spec, "subject", "spec.subject") or {}
    lists = {
        attribute: _strings(section, key, f"spec.subject.{key}")
        for key, attribute in _SUBJECT_LISTS
    }
    serial_number = _string(section, "serialNumber", "spec.subject.serialNumber") or None
    with _reported_at("spec.subject"):
        return Subject(common_name=common_name, serial_number=serial_number, **lists)


def _usages(spec: Mapping[str, Any]) -> tuple[str, ...] | None:
    usages = _strings(spec, "usages", "spec.usages")
    for index, usage in enumerate(usages):
        path = f"spec.usages[{index}]"
        if usage not in USAGES:
            raise SpecError(
                path,
                f"{usage!r} is not one of cert-manager's usages: {', '.join(map(repr, USAGES))}",
            )
        if usage in usages[:index]:
            raise SpecError(path, f"{usage!r} is listed twice")
    # As cert-manager, an empty list asks for the defaults, like an absent one.
    return usages or None


def _name_constraints(spec: Mapping[str, Any]) -> NameConstraints | None:
    path = "spec.nameConstraints"
    section = _section(spec, "nameConstraints", path)
    if section is None:
        return None
    sides: dict[str, NameConstraintItems] = {}
    for side in ("permitted", "excluded"):
        side_path = f"{path}.{side}"
        items = _section(section, side, side_path) or {}
        lists = {
            attribute: _strings(items, key, f"{side_path}.{key}")
            for key, attribute in _CONSTRAINT_LISTS
        }
        with _reported_at(side_path):
            sides[side] = NameConstraintItems(**lists)
    # cert-manager's default; the x509 class defaults to RFC 5280's critical instead.
    critical = _bool(section, "critical", f"{path}.critical", default=False)
    with _reported_at(path):
        return NameConstraints(
            permitted=sides["permitted"], excluded=sides["excluded"], critical=critical
        )


def _issuer_ref(spec: Mapping[str, Any]) -> IssuerRef:
    path = "spec.issuerRef"
    section = _section(spec, "issuerRef", path)
    if section is None:
        raise SpecError(path, "is required: the name (and kind) of the issuer that signs")
    name = _object_name(_required(section, "name", f"{path}.name"), f"{path}.name")
    kind = _choice(section, "kind", f"{path}.kind", ISSUER_KINDS, default="Issuer")
    # As cert-manager, an empty group means the default one.
    group = _string(section, "group", f"{path}.group") or GROUP
    if group != GROUP:
        raise SpecError(
            f"{path}.group",
            f"{group!r} is not {GROUP}: this operator signs only with its own issuers",
        )
    return IssuerRef(name=name, kind=kind, group=group)


def _private_key(spec: Mapping[str, Any]) -> PrivateKeySettings:
    path = "spec.privateKey"
    section = _section(spec, "privateKey", path) or {}
    algorithm = _choice(
        section, "algorithm", f"{path}.algorithm", tuple(KeyAlgorithm), default=KeyAlgorithm.RSA
    )
    size = _positive_integer(section, "size", f"{path}.size")
    if algorithm is KeyAlgorithm.ED25519 and size is not None:
        raise SpecError(f"{path}.size", "Ed25519 keys have a fixed size: leave size unset")
    try:
        key = KeySpec.of(algorithm, size)
    except ConfigurationError as error:
        raise SpecError(f"{path}.size", str(error)) from error
    pkcs11 = _pkcs11(section, path)
    rotation_policy = _choice(
        section, "rotationPolicy", f"{path}.rotationPolicy", ROTATION_POLICIES, default="Always"
    )
    # Rotating a key the user adopted would mean replacing a key the operator did not make.
    if pkcs11 is not None and _NAMES_ONE_KEY.match(pkcs11) and rotation_policy != "Never":
        raise SpecError(
            f"{path}.rotationPolicy",
            "pkcs11 names an existing key (id or object), and adopted keys are never rotated: "
            "set rotationPolicy: Never",
        )
    return PrivateKeySettings(
        spec=key,
        rotation_policy=rotation_policy,
        deletion_policy=_choice(
            section, "deletionPolicy", f"{path}.deletionPolicy", DELETION_POLICIES, "Delete"
        ),
        pkcs11=pkcs11,
    )


def _pkcs11(section: Mapping[str, Any], path: str) -> str | None:
    # Only its type: what the URI may say is for the policy checks, which know the HSMs.
    uri = _string(section, "pkcs11", f"{path}.pkcs11")
    if uri == "":
        raise SpecError(f"{path}.pkcs11", "is empty: give a pkcs11: URI or leave it unset")
    return uri


def _urls(section: Mapping[str, Any], key: str, path: str, attribute: str) -> tuple[str, ...]:
    """A list of URLs, each checked by the profile field they end up in, at parse time so the
    issuer (not each certificate it would sign) reports a bad one."""
    urls = _strings(section, key, f"{path}.{key}")
    for index, url in enumerate(urls):
        change: dict[str, Any] = {attribute: (url,)}
        with _reported_at(f"{path}.{key}[{index}]"):
            dataclasses.replace(_URL_CHECK, **change)
    return urls


@contextmanager
def _reported_at(path: str) -> Iterator[None]:
    try:
        yield
    except ProfileError as error:
        raise SpecError(path, str(error)) from error


def _describe(value: object) -> str:
    """A value's JSON type, for messages."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


def _object(value: object, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise SpecError(path, f"must be an object, not {_describe(value)}")
    return value


def _section(parent: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any] | None:
    value = parent.get(key)
    return None if value is None else _object(value, path)


def _string(parent: Mapping[str, Any], key: str, path: str) -> str | None:
    value = parent.get(key)
    if value is not None and not isinstance(value, str):
        raise SpecError(path, f"must be a string, not {_describe(value)}")
    return value


def _required(parent: Mapping[str, Any], key: str, path: str) -> str:
    value = _string(parent, key, path)
    if not value:
        raise SpecError(path, "is required")
    return value


def _object_name(value: str, path: str) -> str:
    if len(value) > _OBJECT_NAME_MAX or not _OBJECT_NAME.fullmatch(value):
        raise SpecError(
            path,
            f"{value!r} is not a Kubernetes object name: use lower-case letters, digits, '-' "
            f"and '.', starting and ending with a letter or digit, at most {_OBJECT_NAME_MAX} "
            "characters",
        )
    return value


def _strings(parent: Mapping[str, Any], key: str, path: str) -> tuple[str, ...]:
    value = parent.get(key)
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise SpecError(path, f"must be a list of strings, not {_describe(value)}")
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise SpecError(f"{path}[{index}]", f"must be a string, not {_describe(item)}")
    return tuple(value)


def _string_map(parent: Mapping[str, Any], key: str, path: str) -> Mapping[str, str]:
    section = _section(parent, key, path) or {}
    for name, value in section.items():
        if not isinstance(value, str):
            raise SpecError(f"{path}[{name}]", f"must be a string, not {_describe(value)}")
        if name.startswith(RESERVED_PREFIX):
            raise SpecError(
                f"{path}[{name}]", f"keys under {RESERVED_PREFIX} are reserved for the operator"
            )
    return MappingProxyType(dict(section))


def _bool(parent: Mapping[str, Any], key: str, path: str, *, default: bool) -> bool:
    value = parent.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise SpecError(path, f"must be true or false, not {_describe(value)}")
    return value


def _positive_integer(parent: Mapping[str, Any], key: str, path: str) -> int | None:
    value = parent.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise SpecError(path, f"must be a positive integer, not {value!r}")
    return value


def _choice(
    parent: Mapping[str, Any], key: str, path: str, choices: tuple[_Choice, ...], default: _Choice
) -> _Choice:
    value = parent.get(key)
    if value is None:
        return default
    for choice in choices:
        if value == choice:
            return choice
    raise SpecError(path, f"{value!r} is not one of {', '.join(choices)}")


def _duration(parent: Mapping[str, Any], key: str, path: str) -> timedelta | None:
    text = _string(parent, key, path)
    if text is None:
        return None
    with _reported_at(path):
        return parse_duration(text)
