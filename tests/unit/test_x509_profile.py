"""The certificate profile: cert-manager's usages vocabulary, durations, and refusals."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from hypothesis import given
from hypothesis import strategies as st

from pkcs11_issuer.x509 import (
    USAGES,
    CertificateProfile,
    NameConstraintItems,
    NameConstraints,
    ProfileError,
    SignatureScheme,
    Subject,
    extended_key_usage,
    format_duration,
    key_usage,
    parse_duration,
)

HOUR = datetime.timedelta(hours=1)
NAMED = Subject(common_name="example")

# cert-manager's KeyUsage values (pkg/apis/certmanager/v1/types.go), which the issue lists.
CERT_MANAGER_USAGES = {
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "netscape sgc",
}


def test_the_vocabulary_is_exactly_cert_managers() -> None:
    assert set(USAGES) == CERT_MANAGER_USAGES
    assert len(USAGES) == len(CERT_MANAGER_USAGES)


@pytest.mark.parametrize(
    ("usage", "flag"),
    [
        ("signing", "digital_signature"),
        ("digital signature", "digital_signature"),
        ("content commitment", "content_commitment"),
        ("key encipherment", "key_encipherment"),
        ("key agreement", "key_agreement"),
        ("data encipherment", "data_encipherment"),
        ("cert sign", "key_cert_sign"),
        ("crl sign", "crl_sign"),
    ],
)
def test_key_usages_set_exactly_their_bit(usage: str, flag: str) -> None:
    extension = key_usage([usage])
    flags = (
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
    )
    assert {f for f in flags if getattr(extension, f)} == {flag}
    assert extended_key_usage([usage]) is None


@pytest.mark.parametrize(
    ("usage", "oid"),
    [
        ("any", "2.5.29.37.0"),
        ("server auth", "1.3.6.1.5.5.7.3.1"),
        ("client auth", "1.3.6.1.5.5.7.3.2"),
        ("code signing", "1.3.6.1.5.5.7.3.3"),
        ("email protection", "1.3.6.1.5.5.7.3.4"),
        ("s/mime", "1.3.6.1.5.5.7.3.4"),
        ("ipsec end system", "1.3.6.1.5.5.7.3.5"),
        ("ipsec tunnel", "1.3.6.1.5.5.7.3.6"),
        ("ipsec user", "1.3.6.1.5.5.7.3.7"),
        ("timestamping", "1.3.6.1.5.5.7.3.8"),
        ("ocsp signing", "1.3.6.1.5.5.7.3.9"),
        ("microsoft sgc", "1.3.6.1.4.1.311.10.3.3"),
        ("netscape sgc", "2.16.840.1.113730.4.1"),
    ],
)
def test_extended_key_usages_map_to_their_oid(usage: str, oid: str) -> None:
    extension = extended_key_usage([usage])
    assert extension is not None
    assert [o.dotted_string for o in extension] == [oid]


def test_encipher_and_decipher_only_need_key_agreement() -> None:
    for usage in ("encipher only", "decipher only"):
        with pytest.raises(ProfileError, match="key agreement"):
            CertificateProfile(subject=NAMED, usages=("digital signature", usage))
        both = key_usage(["key agreement", usage])
        assert both.key_agreement
        assert both.encipher_only == (usage == "encipher only")
        assert both.decipher_only == (usage == "decipher only")


def test_duplicate_extended_usages_appear_once_in_order() -> None:
    extension = extended_key_usage(["client auth", "email protection", "s/mime", "server auth"])
    assert extension is not None
    assert [o.dotted_string for o in extension] == [
        "1.3.6.1.5.5.7.3.2",
        "1.3.6.1.5.5.7.3.4",
        "1.3.6.1.5.5.7.3.1",
    ]


def test_default_usages_are_cert_managers_and_a_ca_can_sign() -> None:
    leaf = CertificateProfile(subject=NAMED)
    assert leaf.effective_usages == ("digital signature", "key encipherment")
    ca = CertificateProfile(subject=NAMED, is_ca=True)
    assert set(ca.effective_usages) == {"digital signature", "key encipherment", "cert sign"}


def test_unknown_usage_is_refused_with_the_vocabulary() -> None:
    with pytest.raises(ProfileError, match=r"unknown usage\(s\) 'server'.*\"server auth\""):
        CertificateProfile(subject=NAMED, usages=("server",))


def test_a_ca_without_cert_sign_is_refused() -> None:
    with pytest.raises(ProfileError, match='needs the "cert sign" usage'):
        CertificateProfile(subject=NAMED, is_ca=True, usages=("crl sign", "digital signature"))


def test_cert_sign_on_a_leaf_is_refused() -> None:
    with pytest.raises(ProfileError, match="only for CA certificates"):
        CertificateProfile(subject=NAMED, usages=("cert sign",))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2160h", datetime.timedelta(days=90)),
        ("1h30m", datetime.timedelta(minutes=90)),
        ("90m", datetime.timedelta(minutes=90)),
        ("1.5h", datetime.timedelta(minutes=90)),
        (".5h", datetime.timedelta(minutes=30)),
        ("1h0m0s", HOUR),
        ("3650d", datetime.timedelta(days=3650)),
        ("87600h", datetime.timedelta(days=3650)),
        ("1500ms", datetime.timedelta(seconds=1.5)),
        ("2us", datetime.timedelta(microseconds=2)),
        ("3\u00b5s", datetime.timedelta(microseconds=3)),
        ("0", datetime.timedelta(0)),
    ],
)
def test_go_durations_and_days_parse(text: str, expected: datetime.timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "h", "10", "-1h", "1x", "1h 30m", "1y", "1h-5m", "h1"])
def test_malformed_durations_are_refused(text: str) -> None:
    with pytest.raises(ProfileError, match="invalid duration"):
        parse_duration(text)


@given(st.integers(min_value=0, max_value=10**9))
def test_formatted_durations_parse_back(seconds: int) -> None:
    duration = datetime.timedelta(seconds=seconds)
    assert parse_duration(format_duration(duration)) == duration


def test_format_duration_writes_what_go_writes() -> None:
    assert format_duration(datetime.timedelta(days=90)) == "2160h0m0s"
    assert format_duration(datetime.timedelta(minutes=59, seconds=1)) == "0h59m1s"


def test_duration_under_one_hour_is_refused() -> None:
    with pytest.raises(ProfileError, match=r"0h59m59s is shorter than the minimum of 1h0m0s"):
        CertificateProfile(subject=NAMED, duration=HOUR - datetime.timedelta(seconds=1))
    assert CertificateProfile(subject=NAMED, duration=HOUR).duration == HOUR


def test_default_duration_is_cert_managers_90_days() -> None:
    assert CertificateProfile(subject=NAMED).duration == datetime.timedelta(hours=2160)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"max_path_length": 1}, "path length is only meaningful for a CA"),
        ({"is_ca": True, "max_path_length": -1}, "negative"),
        (
            {"name_constraints": NameConstraints(NameConstraintItems(dns_domains=("a.b",)))},
            "name constraints are only meaningful for a CA",
        ),
        ({"subject": Subject()}, "names nothing"),
        ({"subject": Subject(), "is_ca": True, "dns_names": ("ca.example",)}, "needs a subject"),
        ({"ip_addresses": ("10.0.0.256",)}, "not an IPv4 or IPv6 address"),
        ({"email_addresses": ("nobody",)}, "not an ASCII email address"),
        ({"dns_names": ("bad name.example",)}, "not an ASCII DNS name"),
        ({"dns_names": ("b\u00fccher.example",)}, "xn--"),
        ({"uris": ("no-scheme",)}, "uris: 'no-scheme' is not an absolute"),
        ({"crl_distribution_points": ("crl.example/ca.crl",)}, "CRL distribution point"),
        ({"ocsp_servers": ("",)}, "OCSP server"),
        ({"issuing_certificate_urls": ("ca.crt",)}, "issuing certificate URL"),
    ],
)
def test_nonsense_profiles_are_refused(changes: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {"subject": NAMED, **changes}
    with pytest.raises(ProfileError, match=message):
        CertificateProfile(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"countries": ("GBR",)}, "two-letter"),
        ({"countries": ("1A",)}, "two-letter"),
        ({"common_name": "x" * 65}, "longer than 64"),
        ({"organizations": ("",)}, "empty values"),
        ({"common_name": " "}, "empty values"),
    ],
)
def test_bad_subjects_are_refused(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        Subject(**fields)  # type: ignore[arg-type]


def test_subject_is_written_in_gos_order_one_value_per_rdn() -> None:
    subject = Subject(
        common_name="CN",
        organizations=("O1", "O2"),
        countries=("GB",),
        organizational_units=("OU",),
        localities=("L",),
        provinces=("ST",),
        street_addresses=("Street",),
        postal_codes=("PC",),
        serial_number="SN",
    )
    name = subject.to_name()
    assert all(len(rdn) == 1 for rdn in name.rdns)
    assert [attribute.value for attribute in name] == [
        "GB",
        "ST",
        "L",
        "Street",
        "PC",
        "O1",
        "O2",
        "OU",
        "CN",
        "SN",
    ]
    assert name.rfc4514_string() == (
        "2.5.4.5=SN,CN=CN,OU=OU,O=O2,O=O1,2.5.4.17=PC,STREET=Street,L=L,ST=ST,C=GB"
    )


def test_name_constraints_need_a_name_and_exact_ranges() -> None:
    with pytest.raises(ProfileError, match="at least one permitted or excluded"):
        NameConstraints()
    with pytest.raises(ProfileError, match="has host bits set"):
        NameConstraintItems(ip_ranges=("10.0.0.1/8",))
    constraints = NameConstraints(
        permitted=NameConstraintItems(
            dns_domains=("example.com",),
            ip_ranges=("10.0.0.0/8", "2001:db8::/32"),
            email_addresses=("example.com",),
            uri_domains=(".example.com",),
        ),
        excluded=NameConstraintItems(dns_domains=("bad.example.com",)),
    )
    extension = constraints.extension()
    assert extension.permitted_subtrees is not None
    assert len(extension.permitted_subtrees) == 5
    assert extension.excluded_subtrees == [x509.DNSName("bad.example.com")]


def test_subject_alternative_names_keep_cert_managers_order() -> None:
    profile = CertificateProfile(
        email_addresses=("a@example.com",),
        uris=("spiffe://example/ns/default",),
        ip_addresses=("2001:db8::1", "10.0.0.1"),
        dns_names=("example.com",),
    )
    assert [type(n).__name__ for n in profile.general_names()] == [
        "DNSName",
        "IPAddress",
        "IPAddress",
        "UniformResourceIdentifier",
        "RFC822Name",
    ]


def test_signature_scheme_refuses_unknown_hashes() -> None:
    with pytest.raises(ProfileError, match="'sha1' is not supported"):
        SignatureScheme(hash="sha1")
