"""RFC 7512 section 3.3: every example URI, with the values the RFC says it carries.

The RFC wraps its longer examples over several lines and says the line breaks and indentation
are there for display only; `_unwrap` removes them, as the RFC asks a reader to. The parser
itself refuses whitespace (see test_uri_errors.py).
"""

from __future__ import annotations

import re

import pytest

from pkcs11_issuer.uri import Pkcs11Uri, parse

# Verbatim from RFC 7512 section 3.3, in the RFC's order and wrapping.
RFC_EXAMPLES = [
    """pkcs11:""",
    """pkcs11:object=my-pubkey;type=public""",
    """pkcs11:object=my-key;type=private?pin-source=file:/etc/token""",
    """pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;
           manufacturer=Snake%20Oil,%20Inc.;
           model=1.0;
           object=my-certificate;
           type=cert;
           id=%69%95%3E%5C%F4%BD%EC%91;
           serial=
           ?pin-source=file:/etc/token_pin""",
    """pkcs11:object=my-sign-key;
           type=private
           ?module-name=mypkcs11""",
    """pkcs11:object=my-sign-key;
           type=private
           ?module-path=/mnt/libmypkcs11.so.1""",
    """pkcs11:token=Software%20PKCS%2311%20softtoken;
           manufacturer=Snake%20Oil,%20Inc.
           ?pin-value=the-pin""",
    """pkcs11:slot-description=Sun%20Metaslot""",
    """pkcs11:library-manufacturer=Snake%20Oil,%20Inc.;
           library-description=Soft%20Token%20Library;
           library-version=1.23""",
    """pkcs11:token=My%20token%25%20created%20by%20Joe;
           library-version=3;
           id=%01%02%03%Ba%dd%Ca%fe%04%05%06""",
    """pkcs11:token=A%20name%20with%20a%20substring%20%25%3B;
           object=my-certificate;
           type=cert""",
    """pkcs11:token=Name%20with%20a%20small%20A%20with%20acute:%20%C3%A1;
           object=my-certificate;
           type=cert""",
    """pkcs11:token=my-token;
           object=my-certificate;
           type=cert;
           vendor-aaa=value-a
           ?pin-source=file:/etc/token_pin
           &vendor-bbb=value-b""",
]

# What each example means, attribute by attribute, in order of appearance.
EXPECTED: list[tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]] = [
    ([], []),
    ([("object", b"my-pubkey"), ("type", b"public")], []),
    ([("object", b"my-key"), ("type", b"private")], [("pin-source", b"file:/etc/token")]),
    (
        [
            ("token", b"The Software PKCS#11 Softtoken"),
            ("manufacturer", b"Snake Oil, Inc."),
            ("model", b"1.0"),
            ("object", b"my-certificate"),
            ("type", b"cert"),
            ("id", bytes.fromhex("69953e5cf4bdec91")),
            ("serial", b""),
        ],
        [("pin-source", b"file:/etc/token_pin")],
    ),
    ([("object", b"my-sign-key"), ("type", b"private")], [("module-name", b"mypkcs11")]),
    (
        [("object", b"my-sign-key"), ("type", b"private")],
        [("module-path", b"/mnt/libmypkcs11.so.1")],
    ),
    (
        [("token", b"Software PKCS#11 softtoken"), ("manufacturer", b"Snake Oil, Inc.")],
        [("pin-value", b"the-pin")],
    ),
    ([("slot-description", b"Sun Metaslot")], []),
    (
        [
            ("library-manufacturer", b"Snake Oil, Inc."),
            ("library-description", b"Soft Token Library"),
            ("library-version", b"1.23"),
        ],
        [],
    ),
    (
        [
            ("token", b"My token% created by Joe"),
            ("library-version", b"3"),
            ("id", bytes.fromhex("010203baddcafe040506")),
        ],
        [],
    ),
    (
        [
            ("token", b"A name with a substring %;"),
            ("object", b"my-certificate"),
            ("type", b"cert"),
        ],
        [],
    ),
    (
        [
            ("token", "Name with a small A with acute: á".encode()),
            ("object", b"my-certificate"),
            ("type", b"cert"),
        ],
        [],
    ),
    (
        [
            ("token", b"my-token"),
            ("object", b"my-certificate"),
            ("type", b"cert"),
            ("vendor-aaa", b"value-a"),
        ],
        [("pin-source", b"file:/etc/token_pin"), ("vendor-bbb", b"value-b")],
    ),
]


def _unwrap(example: str) -> str:
    return re.sub(r"\s+", "", example)


CASES = list(zip(RFC_EXAMPLES, EXPECTED, strict=True))


@pytest.mark.parametrize(("example", "expected"), CASES, ids=[_unwrap(e) for e in RFC_EXAMPLES])
def test_rfc_example_parses_to_the_attributes_it_names(
    example: str, expected: tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]
) -> None:
    uri = parse(_unwrap(example))
    assert list(uri.path) == expected[0]
    assert list(uri.query) == expected[1]


@pytest.mark.parametrize("example", RFC_EXAMPLES, ids=[_unwrap(e) for e in RFC_EXAMPLES])
def test_rfc_example_is_already_canonical_but_for_hex_case(example: str) -> None:
    # The RFC's examples leave exactly the characters unencoded that the canonical form does,
    # and encode "id" in full; only the mixed-case %Ba%dd of one example differs.
    text = _unwrap(example)
    uppercased = re.sub(r"%[0-9a-fA-F]{2}", lambda m: m.group().upper(), text)
    assert parse(text).format() == uppercased


@pytest.mark.parametrize("example", RFC_EXAMPLES, ids=[_unwrap(e) for e in RFC_EXAMPLES])
def test_rfc_example_canonical_form_parses_back_to_the_same_uri(example: str) -> None:
    uri = parse(_unwrap(example))
    assert parse(uri.format()) == uri


def test_rfc_example_properties_read_as_pkcs11_would_use_them() -> None:
    uri = parse(_unwrap(RFC_EXAMPLES[3]))
    assert uri.token == "The Software PKCS#11 Softtoken"
    assert uri.manufacturer == "Snake Oil, Inc."
    assert uri.model == "1.0"
    assert uri.object == "my-certificate"
    assert uri.type == "cert"
    assert uri.id == bytes.fromhex("69953e5cf4bdec91")
    assert uri.serial == ""
    assert uri.pin_source == "file:/etc/token_pin"
    assert uri.pin_value is None

    library = parse(_unwrap(RFC_EXAMPLES[8]))
    assert library.library_manufacturer == "Snake Oil, Inc."
    assert library.library_description == "Soft Token Library"
    assert library.library_version == (1, 23)
    assert parse(_unwrap(RFC_EXAMPLES[9])).library_version == (3, 0)

    assert parse(_unwrap(RFC_EXAMPLES[7])).slot_description == "Sun Metaslot"
    assert parse(_unwrap(RFC_EXAMPLES[11])).token == "Name with a small A with acute: á"
    assert parse(_unwrap(RFC_EXAMPLES[4])).module_name == "mypkcs11"
    assert parse(_unwrap(RFC_EXAMPLES[5])).module_path == "/mnt/libmypkcs11.so.1"
    assert parse(_unwrap(RFC_EXAMPLES[6])).pin_value == "the-pin"


def test_rfc_example_built_from_parts_formats_to_the_rfc_text() -> None:
    built = Pkcs11Uri.build(object="my-key", type="private", pin_source="file:/etc/token")
    assert built.format() == RFC_EXAMPLES[2]
