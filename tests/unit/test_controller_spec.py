"""Certificate, Issuer and ClusterIssuer specs: defaults, refusals by field, digest, renewal."""

from __future__ import annotations

import copy
import datetime
from typing import Any

import pytest

from pkcs11_issuer.controller.spec import (
    CaSettings,
    IssuerRef,
    IssuerSpec,
    SpecError,
    parse_certificate_spec,
    parse_issuer_spec,
)
from pkcs11_issuer.hsm import KeyAlgorithm, KeySpec
from pkcs11_issuer.x509 import (
    DEFAULT_DURATION,
    CertificateProfile,
    NameConstraintItems,
    Subject,
)
from support.specs import FULL_CERTIFICATE as FULL

HOUR = datetime.timedelta(hours=1)
DAY = datetime.timedelta(days=1)
NOT_BEFORE = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)

MINIMAL: dict[str, Any] = {
    "secretName": "web-tls",
    "issuerRef": {"name": "hsm-ca"},
    "dnsNames": ["web.example.com"],
}


def certificate(**fields: Any) -> dict[str, Any]:
    """MINIMAL with top-level fields replaced; a value of None removes the field."""
    spec = {**copy.deepcopy(MINIMAL), **fields}
    return {key: value for key, value in spec.items() if value is not None}


def private_key(**fields: Any) -> dict[str, Any]:
    return certificate(privateKey=fields)


# --- Certificate: what is read, and the defaults -------------------------------------------


def test_a_minimal_certificate_gets_cert_managers_defaults() -> None:
    spec = parse_certificate_spec(MINIMAL)

    assert spec.secret_name == "web-tls"
    assert spec.issuer_ref == IssuerRef(name="hsm-ca", kind="Issuer", group="pkcs11-issuer.io")
    assert spec.profile == CertificateProfile(dns_names=("web.example.com",))
    assert spec.profile.duration == DEFAULT_DURATION == 2160 * HOUR
    assert spec.profile.usages is None
    assert spec.profile.effective_usages == ("digital signature", "key encipherment")
    assert not spec.profile.is_ca
    assert spec.profile.name_constraints is None
    assert spec.renew_before is None
    assert spec.private_key.spec == KeySpec(KeyAlgorithm.RSA, 2048)
    assert spec.private_key.rotation_policy == "Always"
    assert spec.private_key.deletion_policy == "Delete"
    assert spec.private_key.pkcs11 is None
    assert spec.secret_labels == {}
    assert spec.secret_annotations == {}


def test_a_full_certificate_is_read_field_by_field() -> None:
    spec = parse_certificate_spec(FULL)

    assert spec.secret_name == "intermediate-ca"
    assert spec.issuer_ref == IssuerRef("root", "ClusterIssuer", "pkcs11-issuer.io")
    profile = spec.profile
    assert profile.subject == Subject(
        common_name="Example Intermediate CA",
        organizations=("Example Ltd",),
        countries=("GB",),
        organizational_units=("Platform",),
        localities=("London",),
        provinces=("England",),
        street_addresses=("1 High Street",),
        postal_codes=("EC1A 1AA",),
        serial_number="42",
    )
    assert profile.dns_names == ("ca.example.com",)
    assert profile.ip_addresses == ("10.0.0.1", "::1")
    assert profile.uris == ("spiffe://cluster.local/ns/pki/sa/ca",)
    assert profile.email_addresses == ("pki@example.com",)
    assert profile.duration == 8760 * HOUR
    assert profile.usages == ("cert sign", "crl sign", "digital signature")
    assert profile.is_ca
    constraints = profile.name_constraints
    assert constraints is not None
    assert constraints.critical
    assert constraints.permitted == NameConstraintItems(
        dns_domains=("example.com",),
        ip_ranges=("10.0.0.0/8",),
        email_addresses=("example.com",),
        uri_domains=("cluster.local",),
    )
    assert constraints.excluded == NameConstraintItems(dns_domains=("secret.example.com",))
    # The issuer's URLs are stamped later, by IssuerSpec.stamp.
    assert profile.crl_distribution_points == profile.ocsp_servers == ()
    assert spec.renew_before == 720 * HOUR
    assert spec.private_key.spec == KeySpec(KeyAlgorithm.ECDSA, 384)
    assert spec.private_key.rotation_policy == "Never"
    assert spec.private_key.deletion_policy == "Retain"
    assert spec.private_key.pkcs11 == "pkcs11:token=issuer;object=intermediate"
    assert spec.secret_labels == {"app": "pki"}
    assert spec.secret_annotations == {"owner": "platform"}


def test_the_secret_template_cannot_be_changed_through_the_spec() -> None:
    source = certificate(secretTemplate={"labels": {"app": "web"}})
    spec = parse_certificate_spec(source)
    source["secretTemplate"]["labels"]["app"] = "changed"

    assert spec.secret_labels == {"app": "web"}
    with pytest.raises(TypeError):
        spec.secret_labels["app"] = "changed"  # type: ignore[index]


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ({"algorithm": "RSA"}, KeySpec(KeyAlgorithm.RSA, 2048)),
        ({"algorithm": "RSA", "size": 4096}, KeySpec(KeyAlgorithm.RSA, 4096)),
        ({"algorithm": "ECDSA"}, KeySpec(KeyAlgorithm.ECDSA, 256)),
        ({"algorithm": "Ed25519"}, KeySpec(KeyAlgorithm.ED25519, 0)),
        ({"size": 3072}, KeySpec(KeyAlgorithm.RSA, 3072)),
    ],
)
def test_key_sizes_default_by_algorithm(key: dict[str, Any], expected: KeySpec) -> None:
    assert parse_certificate_spec(private_key(**key)).private_key.spec == expected


def test_a_cluster_issuer_is_looked_up_without_a_namespace() -> None:
    issuer = parse_certificate_spec(certificate(issuerRef={"name": "a"})).issuer_ref
    cluster = parse_certificate_spec(
        certificate(issuerRef={"name": "b", "kind": "ClusterIssuer"})
    ).issuer_ref

    assert issuer.key("team-a") == ("Issuer", "team-a", "a")
    assert cluster.key("team-a") == ("ClusterIssuer", None, "b")


def test_name_constraints_are_not_critical_unless_asked_as_in_cert_manager() -> None:
    spec = certificate(
        commonName="CA",
        isCA=True,
        nameConstraints={"permitted": {"dnsDomains": ["example.com"]}},
    )
    constraints = parse_certificate_spec(spec).profile.name_constraints

    assert constraints is not None
    assert not constraints.critical
    assert constraints.excluded == NameConstraintItems()


def test_a_ca_without_usages_gets_cert_sign() -> None:
    profile = parse_certificate_spec(certificate(commonName="CA", isCA=True)).profile

    assert profile.usages is None
    assert "cert sign" in profile.effective_usages


@pytest.mark.parametrize(
    ("fields", "attribute", "expected"),
    [
        # Go cannot tell these from absent ones, so cert-manager reads them as unset.
        ({"commonName": ""}, "common_name", None),
        ({"subject": {"serialNumber": ""}}, "serial_number", None),
        ({"usages": []}, "usages", None),
        ({"issuerRef": {"name": "ca", "group": ""}}, "group", "pkcs11-issuer.io"),
        # null, as a client may send for an unset field.
        ({"isCA": None, "usages": None}, "usages", None),
        ({"duration": "90d"}, "duration", 2160 * HOUR),
        ({"duration": "1h30m"}, "duration", 1.5 * HOUR),
    ],
)
def test_empty_and_alternative_spellings(
    fields: dict[str, Any], attribute: str, expected: object
) -> None:
    spec = parse_certificate_spec({**MINIMAL, **fields})
    holders = (spec.profile.subject, spec.profile, spec.issuer_ref)
    holder = next(holder for holder in holders if hasattr(holder, attribute))

    assert getattr(holder, attribute) == expected


def test_unknown_fields_are_ignored() -> None:
    spec = certificate(
        literalSubject="CN=x",
        privateKey={"encoding": "PKCS8"},
        issuerRef={"name": "hsm-ca", "x": 1},
    )

    assert parse_certificate_spec(spec) == parse_certificate_spec(MINIMAL)


def test_an_adopted_key_kept_forever_is_accepted() -> None:
    uri = "pkcs11:token=issuer;id=%01"
    spec = parse_certificate_spec(private_key(pkcs11=uri, rotationPolicy="Never"))

    assert spec.private_key.pkcs11 == uri
    assert spec.private_key.rotation_policy == "Never"


def test_a_token_uri_allows_rotation() -> None:
    spec = parse_certificate_spec(private_key(pkcs11="pkcs11:token=issuer"))

    assert spec.private_key.rotation_policy == "Always"


# --- Certificate: refusals, each at its field ----------------------------------------------


CERTIFICATE_ERRORS: list[tuple[Any, str, str]] = [
    ("not an object", "spec", "must be an object"),
    (certificate(secretName=None), "spec.secretName", "is required"),
    (certificate(secretName=""), "spec.secretName", "is required"),
    (certificate(secretName=5), "spec.secretName", "must be a string, not a number"),
    (certificate(secretName="Web_TLS"), "spec.secretName", "not a Kubernetes object name"),
    (certificate(secretName="a" * 254), "spec.secretName", "at most 253"),
    (certificate(issuerRef=None), "spec.issuerRef", "is required"),
    (certificate(issuerRef="hsm-ca"), "spec.issuerRef", "must be an object, not a string"),
    (certificate(issuerRef={"kind": "Issuer"}), "spec.issuerRef.name", "is required"),
    (certificate(issuerRef={"name": "CA!"}), "spec.issuerRef.name", "object name"),
    (
        certificate(issuerRef={"name": "ca", "kind": "CertificateAuthority"}),
        "spec.issuerRef.kind",
        "not one of Issuer, ClusterIssuer",
    ),
    (
        certificate(issuerRef={"name": "ca", "group": "cert-manager.io"}),
        "spec.issuerRef.group",
        "only with its own issuers",
    ),
    (certificate(commonName=7), "spec.commonName", "must be a string"),
    (certificate(commonName="x" * 65), "spec.commonName", "longer than 64"),
    (certificate(subject=["O=x"]), "spec.subject", "must be an object, not a list"),
    (
        certificate(subject={"organizations": "Example"}),
        "spec.subject.organizations",
        "must be a list of strings, not a string",
    ),
    (
        certificate(subject={"localities": ["ok", 3]}),
        "spec.subject.localities[1]",
        "must be a string, not a number",
    ),
    (certificate(subject={"countries": ["GBR"]}), "spec.subject", "two-letter"),
    (certificate(subject={"serialNumber": 42}), "spec.subject.serialNumber", "must be a string"),
    (certificate(dnsNames="web.example.com"), "spec.dnsNames", "must be a list of strings"),
    (certificate(dnsNames=["ok.example", None]), "spec.dnsNames[1]", "must be a string"),
    (certificate(dnsNames=["not a name"]), "spec", "dnsNames"),
    (certificate(ipAddresses=["300.0.0.1"]), "spec", "ipAddresses"),
    (certificate(uris=["no-scheme"]), "spec", "uris"),
    (certificate(emailAddresses=["nobody"]), "spec", "emailAddresses"),
    (
        certificate(dnsNames=None, subject={"organizations": ["Example"]}),
        "spec",
        "must name something",
    ),
    (certificate(duration="90 days"), "spec.duration", "invalid duration"),
    (certificate(duration=3600), "spec.duration", "must be a string"),
    (certificate(duration="59m"), "spec.duration", "out of range"),
    (certificate(duration="876001h"), "spec.duration", "out of range"),
    (certificate(renewBefore="soon"), "spec.renewBefore", "invalid duration"),
    (certificate(renewBefore="0s"), "spec.renewBefore", "longer than 0s"),
    (certificate(renewBefore="2160h"), "spec.renewBefore", "shorter than the duration"),
    (
        certificate(duration="24h", renewBefore="48h"),
        "spec.renewBefore",
        "shorter than the duration (24h0m0s)",
    ),
    (certificate(usages="server auth"), "spec.usages", "must be a list of strings"),
    (certificate(usages=["serverauth"]), "spec.usages[0]", "not one of cert-manager's usages"),
    (
        certificate(usages=["server auth", "client auth", "server auth"]),
        "spec.usages[2]",
        "listed twice",
    ),
    (certificate(usages=["cert sign"]), "spec", '"cert sign" is only for CA certificates'),
    (certificate(isCA="true"), "spec.isCA", "must be true or false, not a string"),
    (certificate(isCA=True), "spec", "needs a subject"),
    (
        certificate(nameConstraints={"permitted": {"dnsDomains": ["example.com"]}}),
        "spec",
        "only meaningful for a CA",
    ),
    (certificate(nameConstraints=True), "spec.nameConstraints", "must be an object"),
    (
        certificate(commonName="CA", isCA=True, nameConstraints={}),
        "spec.nameConstraints",
        "at least one permitted or excluded name",
    ),
    (
        certificate(nameConstraints={"critical": "yes"}),
        "spec.nameConstraints.critical",
        "must be true or false",
    ),
    (
        certificate(nameConstraints={"permitted": ["example.com"]}),
        "spec.nameConstraints.permitted",
        "must be an object",
    ),
    (
        certificate(nameConstraints={"permitted": {"ipRanges": ["10.0.0.1/8"]}}),
        "spec.nameConstraints.permitted",
        "host bits set",
    ),
    (
        certificate(nameConstraints={"excluded": {"uriDomains": [1]}}),
        "spec.nameConstraints.excluded.uriDomains[0]",
        "must be a string",
    ),
    (certificate(secretTemplate="labels"), "spec.secretTemplate", "must be an object"),
    (
        certificate(secretTemplate={"labels": ["app"]}),
        "spec.secretTemplate.labels",
        "must be an object",
    ),
    (
        certificate(secretTemplate={"labels": {"replicas": 3}}),
        "spec.secretTemplate.labels[replicas]",
        "must be a string, not a number",
    ),
    (
        certificate(secretTemplate={"labels": {"pkcs11-issuer.io/certificate": "x"}}),
        "spec.secretTemplate.labels[pkcs11-issuer.io/certificate]",
        "reserved for the operator",
    ),
    (
        certificate(secretTemplate={"annotations": {"pkcs11-issuer.io/key-uri": "x"}}),
        "spec.secretTemplate.annotations[pkcs11-issuer.io/key-uri]",
        "reserved for the operator",
    ),
    (certificate(privateKey="RSA"), "spec.privateKey", "must be an object"),
    (private_key(algorithm="DSA"), "spec.privateKey.algorithm", "not one of RSA, ECDSA, Ed25519"),
    (private_key(algorithm="rsa"), "spec.privateKey.algorithm", "not one of"),
    (private_key(size=1024), "spec.privateKey.size", "1024 is not supported"),
    (private_key(algorithm="ECDSA", size=521), "spec.privateKey.size", "521 is not supported"),
    (private_key(algorithm="ECDSA", size=2048), "spec.privateKey.size", "not supported"),
    (private_key(algorithm="Ed25519", size=256), "spec.privateKey.size", "fixed size"),
    (private_key(size="2048"), "spec.privateKey.size", "must be a positive integer"),
    (private_key(size=True), "spec.privateKey.size", "must be a positive integer"),
    (private_key(size=2048.0), "spec.privateKey.size", "must be a positive integer"),
    (private_key(size=0), "spec.privateKey.size", "must be a positive integer"),
    (private_key(rotationPolicy="Sometimes"), "spec.privateKey.rotationPolicy", "Always, Never"),
    (private_key(deletionPolicy="Keep"), "spec.privateKey.deletionPolicy", "Delete, Retain"),
    (private_key(pkcs11=""), "spec.privateKey.pkcs11", "is empty"),
    (private_key(pkcs11=["pkcs11:"]), "spec.privateKey.pkcs11", "must be a string"),
    (
        private_key(pkcs11="pkcs11:token=issuer;id=%01"),
        "spec.privateKey.rotationPolicy",
        "set rotationPolicy: Never",
    ),
    (
        private_key(pkcs11="pkcs11:object=web", rotationPolicy="Always"),
        "spec.privateKey.rotationPolicy",
        "adopted keys are never rotated",
    ),
]


@pytest.mark.parametrize(("spec", "field", "message"), CERTIFICATE_ERRORS)
def test_certificate_errors_name_their_field(spec: Any, field: str, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_certificate_spec(spec)

    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")
    assert message in str(caught.value)


def test_a_spec_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"^spec\.secretName: is required$"):
        parse_certificate_spec(certificate(secretName=None))


# --- Certificate: the digest that decides on re-issuance -----------------------------------


def digest(spec: dict[str, Any]) -> str:
    return parse_certificate_spec(spec).digest()


def _reversed(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _reversed(value[key]) for key in reversed(value)}
    return value


def test_the_digest_does_not_depend_on_key_order() -> None:
    flipped = _reversed(FULL)
    assert list(flipped) != list(FULL)

    assert digest(flipped) == digest(FULL)
    assert len(digest(FULL)) == 64
    int(digest(FULL), 16)


def test_the_digest_is_pinned() -> None:
    # Every certificate is re-issued when its digest changes: changing this value means an
    # operator upgrade re-issues every certificate in every cluster.
    assert digest(MINIMAL) == "ae62d4dcb3d0d1fc5ff57e2640669ab45ef5988e2fab884c06228dfbf536f473"


def test_spelling_out_defaults_keeps_the_digest() -> None:
    explicit = certificate(
        issuerRef={"name": "hsm-ca", "kind": "Issuer", "group": "pkcs11-issuer.io"},
        duration="90d",
        usages=["digital signature", "key encipherment"],
        isCA=False,
        privateKey={"algorithm": "RSA", "size": 2048},
        commonName="",
    )

    assert digest(explicit) == digest(MINIMAL)


@pytest.mark.parametrize(
    "fields",
    [
        {"secretTemplate": {"labels": {"a": "b"}, "annotations": {"c": "d"}}},
        {"renewBefore": "240h"},
        {"privateKey": {"rotationPolicy": "Never"}},
        {"privateKey": {"deletionPolicy": "Retain"}},
    ],
)
def test_changes_that_need_no_new_certificate_keep_the_digest(fields: dict[str, Any]) -> None:
    assert digest(certificate(**fields)) == digest(MINIMAL)


@pytest.mark.parametrize(
    "fields",
    [
        {"dnsNames": ["other.example.com"]},
        {"dnsNames": ["web.example.com", "www.example.com"]},
        {"commonName": "web"},
        {"subject": {"organizations": ["Example"]}},
        {"ipAddresses": ["10.0.0.1"]},
        {"uris": ["spiffe://x/y"]},
        {"emailAddresses": ["a@example.com"]},
        {"duration": "720h"},
        {"usages": ["server auth"]},
        {"issuerRef": {"name": "other-ca"}},
        {"issuerRef": {"name": "hsm-ca", "kind": "ClusterIssuer"}},
        {"privateKey": {"algorithm": "ECDSA"}},
        {"privateKey": {"size": 4096}},
        {"privateKey": {"pkcs11": "pkcs11:token=other"}},
    ],
)
def test_changes_to_the_certificate_or_key_change_the_digest(fields: dict[str, Any]) -> None:
    assert digest(certificate(**fields)) != digest(MINIMAL)


def test_ca_settings_change_the_digest() -> None:
    ca = certificate(
        commonName="CA", isCA=True, nameConstraints={"permitted": {"dnsDomains": ["a.example"]}}
    )
    critical = copy.deepcopy(ca)
    critical["nameConstraints"]["critical"] = True
    excluded = copy.deepcopy(ca)
    excluded["nameConstraints"]["excluded"] = {"dnsDomains": ["b.a.example"]}

    assert len({digest(ca), digest(critical), digest(excluded)}) == 3
    assert digest(ca) != digest(certificate(commonName="CA", isCA=True))


# --- Certificate: renewal time -------------------------------------------------------------


def test_renewal_defaults_to_a_third_of_the_lifetime_before_expiry() -> None:
    spec = parse_certificate_spec(MINIMAL)
    not_after = NOT_BEFORE + 90 * DAY

    assert spec.renewal_time(NOT_BEFORE, not_after) == not_after - 30 * DAY


def test_renewal_honours_renew_before() -> None:
    spec = parse_certificate_spec(certificate(renewBefore="240h"))
    not_after = NOT_BEFORE + 90 * DAY

    assert spec.renewal_time(NOT_BEFORE, not_after) == not_after - 10 * DAY


@pytest.mark.parametrize("lifetime_days", [30, 20])
def test_renew_before_beyond_a_clamped_lifetime_falls_back_to_a_third(lifetime_days: int) -> None:
    # 30 days asked before expiry; the issuer only granted lifetime_days.
    spec = parse_certificate_spec(certificate(renewBefore="720h"))
    not_after = NOT_BEFORE + lifetime_days * DAY

    assert spec.renewal_time(NOT_BEFORE, not_after) == not_after - lifetime_days * DAY / 3


def test_renewal_time_is_whole_seconds_and_never_late() -> None:
    spec = parse_certificate_spec(certificate(duration="1h"))
    lifetime = HOUR + datetime.timedelta(seconds=1)
    exact = NOT_BEFORE + lifetime * 2 / 3
    assert exact.microsecond != 0

    renewal = spec.renewal_time(NOT_BEFORE, NOT_BEFORE + lifetime)

    assert renewal.microsecond == 0
    assert exact - datetime.timedelta(seconds=1) < renewal <= exact


# --- Issuers ------------------------------------------------------------------------------


def test_a_self_signed_issuer() -> None:
    assert parse_issuer_spec({"selfSigned": {}}) == IssuerSpec(
        self_signed=True, ca=None, crl_distribution_points=()
    )
    spec = parse_issuer_spec({"selfSigned": {"crlDistributionPoints": ["http://crl.example/a"]}})

    assert spec.crl_distribution_points == ("http://crl.example/a",)


def test_a_ca_issuer() -> None:
    spec = parse_issuer_spec(
        {
            "ca": {
                "pkcs11": "pkcs11:token=issuer;object=ca-key",
                "secretName": "ca-cert",
                "crlDistributionPoints": ["http://crl.example/ca.crl"],
                "ocspServers": ["http://ocsp.example"],
                "issuingCertificateURLs": ["http://pki.example/ca.crt"],
            },
            "unknown": True,
        }
    )

    assert spec == IssuerSpec(
        self_signed=False,
        ca=CaSettings(
            pkcs11="pkcs11:token=issuer;object=ca-key",
            secret_name="ca-cert",
            crl_distribution_points=("http://crl.example/ca.crl",),
            ocsp_servers=("http://ocsp.example",),
            issuing_certificate_urls=("http://pki.example/ca.crt",),
        ),
        crl_distribution_points=("http://crl.example/ca.crl",),
    )


@pytest.mark.parametrize(
    "ca",
    [{"pkcs11": "pkcs11:token=issuer;object=ca-key"}, {"secretName": "ca-cert"}],
)
def test_a_ca_needs_only_its_key_or_its_secret(ca: dict[str, Any]) -> None:
    spec = parse_issuer_spec({"ca": ca})

    assert spec.ca is not None
    assert spec.ca.pkcs11 == ca.get("pkcs11")
    assert spec.ca.secret_name == ca.get("secretName")
    assert spec.ca.ocsp_servers == spec.crl_distribution_points == ()


ISSUER_ERRORS: list[tuple[Any, str, str]] = [
    (["selfSigned"], "spec", "must be an object, not a list"),
    ({}, "spec", "set an issuer type: selfSigned or ca"),
    ({"selfSigned": None}, "spec", "set an issuer type"),
    ({"selfSigned": {}, "ca": {"secretName": "ca"}}, "spec", "not both"),
    ({"selfSigned": True}, "spec.selfSigned", "must be an object, not a boolean"),
    (
        {"selfSigned": {"crlDistributionPoints": "http://crl.example"}},
        "spec.selfSigned.crlDistributionPoints",
        "must be a list of strings",
    ),
    (
        {"selfSigned": {"crlDistributionPoints": ["crl.example/ca.crl"]}},
        "spec.selfSigned.crlDistributionPoints[0]",
        "CRL distribution point: 'crl.example/ca.crl' is not an absolute ASCII URI",
    ),
    ({"ca": "ca-cert"}, "spec.ca", "must be an object"),
    ({"ca": {}}, "spec.ca", "set pkcs11 (the CA key's URI), secretName"),
    ({"ca": {"pkcs11": ""}}, "spec.ca.pkcs11", "is empty"),
    ({"ca": {"pkcs11": 1}}, "spec.ca.pkcs11", "must be a string"),
    ({"ca": {"secretName": "CA Cert"}}, "spec.ca.secretName", "not a Kubernetes object name"),
    ({"ca": {"secretName": ""}}, "spec.ca.secretName", "not a Kubernetes object name"),
    (
        {"ca": {"secretName": "ca", "ocspServers": ["http://ocsp.example", "ocsp"]}},
        "spec.ca.ocspServers[1]",
        "OCSP server: 'ocsp' is not an absolute ASCII URI",
    ),
    (
        {"ca": {"secretName": "ca", "issuingCertificateURLs": [7]}},
        "spec.ca.issuingCertificateURLs[0]",
        "must be a string",
    ),
    (
        {"ca": {"secretName": "ca", "crlDistributionPoints": ["http://crl.exämple"]}},
        "spec.ca.crlDistributionPoints[0]",
        "not an absolute ASCII URI",
    ),
]


@pytest.mark.parametrize(("spec", "field", "message"), ISSUER_ERRORS)
def test_issuer_errors_name_their_field(spec: Any, field: str, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_issuer_spec(spec)

    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")
    assert message in str(caught.value)


def test_a_ca_stamps_its_urls_on_what_it_signs() -> None:
    issuer = parse_issuer_spec(
        {
            "ca": {
                "secretName": "ca",
                "crlDistributionPoints": ["http://crl.example/ca.crl"],
                "ocspServers": ["http://ocsp.example"],
                "issuingCertificateURLs": ["http://pki.example/ca.crt"],
            }
        }
    )
    profile = parse_certificate_spec(MINIMAL).profile

    stamped = issuer.stamp(profile)

    assert stamped.crl_distribution_points == ("http://crl.example/ca.crl",)
    assert stamped.ocsp_servers == ("http://ocsp.example",)
    assert stamped.issuing_certificate_urls == ("http://pki.example/ca.crt",)
    assert stamped.dns_names == profile.dns_names
    assert stamped.duration == profile.duration
    assert issuer.stamp(stamped) == stamped


def test_a_self_signed_issuer_stamps_only_its_crl_and_drops_other_urls() -> None:
    issuer = parse_issuer_spec({"selfSigned": {"crlDistributionPoints": ["http://crl.example"]}})
    profile = CertificateProfile(
        subject=Subject(common_name="root"),
        crl_distribution_points=("http://old.example/crl",),
        ocsp_servers=("http://old.example/ocsp",),
        issuing_certificate_urls=("http://old.example/ca.crt",),
    )

    stamped = issuer.stamp(profile)

    assert stamped.crl_distribution_points == ("http://crl.example",)
    assert stamped.ocsp_servers == stamped.issuing_certificate_urls == ()
    assert stamped.subject == profile.subject
