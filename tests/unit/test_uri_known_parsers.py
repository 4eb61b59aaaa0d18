"""Cases that other PKCS#11 URI parsers test, and what this parser makes of them.

Sources studied (cases restated here, no code taken): p11-kit's test-uri.c, OpenSC's
parse_pkcs11_uri unit tests, stefanberger/go-pkcs11uri's tests and the Rust pk11-uri-parser
tests. Where this parser is stricter than the source, the case says so; the refusals and their
positions are in test_uri_errors.py, the comparison with p11-kit itself in
tests/hsm/test_uri_p11kit.py.
"""

from __future__ import annotations

import pytest

from pkcs11_issuer.uri import UriError, parse

ACCEPTED: list[tuple[str, list[tuple[str, bytes]], list[tuple[str, bytes]]]] = [
    # p11-kit
    ("pkcs11:object=Test%20Label", [("object", b"Test Label")], []),
    (
        "pkcs11:object=Test%20Label;type=cert",
        [("object", b"Test Label"), ("type", b"cert")],
        [],
    ),
    # An empty label or id is a value (match the empty string), not an absent attribute.
    ("pkcs11:object=;type=cert", [("object", b""), ("type", b"cert")], []),
    ("pkcs11:id=;type=cert", [("id", b""), ("type", b"cert")], []),
    ("pkcs11:id=%54%45%53%54%00", [("id", b"TEST\x00")], []),
    (
        "pkcs11:token=Token%20Label;serial=3333;model=Deluxe;manufacturer=Me",
        [
            ("token", b"Token Label"),
            ("serial", b"3333"),
            ("model", b"Deluxe"),
            ("manufacturer", b"Me"),
        ],
        [],
    ),
    (
        "pkcs11:library-description=The%20Library;library-manufacturer=Me",
        [("library-description", b"The Library"), ("library-manufacturer", b"Me")],
        [],
    ),
    (
        "pkcs11:slot-description=Slot%20Description;slot-manufacturer=Me",
        [("slot-description", b"Slot Description"), ("slot-manufacturer", b"Me")],
        [],
    ),
    ("pkcs11:type=private", [("type", b"private")], []),
    ("pkcs11:type=secret-key", [("type", b"secret-key")], []),
    ("pkcs11:library-version=2.101", [("library-version", b"2.101")], []),
    ("pkcs11:library-version=23", [("library-version", b"23")], []),
    ("pkcs11:x-blah=some-value", [("x-blah", b"some-value")], []),
    # p11-kit flags this as unrecognised because it overflows CK_TOKEN_INFO.model; RFC 7512
    # leaves length checks to the consumer, so the parser keeps it.
    (
        "pkcs11:model=a-value-that-is-too-long-for-the-field-that-it-goes-with",
        [("model", b"a-value-that-is-too-long-for-the-field-that-it-goes-with")],
        [],
    ),
    ("pkcs11:?pin-source=blah%2Fblah", [], [("pin-source", b"blah/blah")]),
    ("pkcs11:?pin-value=blah%2Fblah", [], [("pin-value", b"blah/blah")]),
    (
        "pkcs11:?module-name=1%2a%26%23%25%26%40%28&module-path=/blah%2Fblah",
        [],
        [("module-name", b"1*&#%&@("), ("module-path", b"/blah/blah")],
    ),
    # Vendor query attributes may repeat; order of appearance is kept (p11-kit sorts them).
    (
        "pkcs11:?bbb=zzz&aaa=xxx&aaa=yyy",
        [],
        [("bbb", b"zzz"), ("aaa", b"xxx"), ("aaa", b"yyy")],
    ),
    ("pkcs11:slot-id=67890", [("slot-id", b"67890")], []),
    ("PKCS11:", [], []),
    # OpenSC
    ("pkcs11:id=%30%31%32", [("id", b"012")], []),
    ("pkcs11:id=123456", [("id", b"123456")], []),
    ("pkcs11:serial=", [("serial", b"")], []),
    ("pkcs11:manufacturer=Snake%20Oil,%20Inc.", [("manufacturer", b"Snake Oil, Inc.")], []),
    # OpenSC refuses an unknown attribute; RFC 7512 makes it a vendor attribute.
    ("pkcs11:invalid=123456", [("invalid", b"123456")], []),
    # go-pkcs11uri
    (
        "pkcs11:id=%02;object=SIGN%20pubkey;token=SSH%20key;manufacturer=piv_II"
        "?module-path=/usr/lib64/pkcs11/opensc-pkcs11.so",
        [
            ("id", b"\x02"),
            ("object", b"SIGN pubkey"),
            ("token", b"SSH key"),
            ("manufacturer", b"piv_II"),
        ],
        [("module-path", b"/usr/lib64/pkcs11/opensc-pkcs11.so")],
    ),
    (
        "pkcs11:token=:[]@!$'()*+,=&?attr=:[]@!$'()*+,=/?",
        [("token", b":[]@!$'()*+,=&")],
        [("attr", b":[]@!$'()*+,=/?")],
    ),
    (
        "pkcs11:token=%3a%5b%5d%40%21%24%27%28%29%2a%2b%2c%26%3d-%60%20%3c%3e%7b",
        [("token", b":[]@!$'()*+,&=-` <>{")],
        [],
    ),
    ("pkcs11:token=%00%01%02Hello%FF%FE", [("token", b"\x00\x01\x02Hello\xff\xfe")], []),
    ("pkcs11:slot-id=1", [("slot-id", b"1")], []),
    ("pkcs11:library-version=7", [("library-version", b"7")], []),
    ("pkcs11:library-version=1.8", [("library-version", b"1.8")], []),
    # pk11-uri-parser
    ("pkcs11:library-version=1.01", [("library-version", b"1.01")], []),
    ("pkcs11:type=data", [("type", b"data")], []),
    # Bounds: the largest CK_SLOT_ID and CK_BYTE version parts.
    ("pkcs11:slot-id=18446744073709551615", [("slot-id", b"18446744073709551615")], []),
    ("pkcs11:library-version=255.255", [("library-version", b"255.255")], []),
    ("pkcs11:?", [], []),
    ("pkcs11:?pin-source=|/usr/bin/get-pin", [], [("pin-source", b"|/usr/bin/get-pin")]),
]


@pytest.mark.parametrize(("text", "path", "query"), ACCEPTED, ids=[c[0][:60] for c in ACCEPTED])
def test_accepted_with_these_attributes(
    text: str, path: list[tuple[str, bytes]], query: list[tuple[str, bytes]]
) -> None:
    uri = parse(text)
    assert list(uri.path) == path
    assert list(uri.query) == query
    assert parse(uri.format()) == uri


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        # go-pkcs11uri: the reserved characters each component allows stay unencoded.
        (
            "pkcs11:token=:[]@!$'()*+,=&?attr=:[]@!$'()*+,=/?",
            "pkcs11:token=:[]@!$'()*+,=&?attr=:[]@!$'()*+,=/?",
        ),
        # ...and needlessly encoded ones are written plainly, the rest in uppercase hex.
        (
            "pkcs11:token=%3a%5b%5d%40%21%24%27%28%29%2a%2b%2c%26%3d-%60%20%3c%3e%7b",
            "pkcs11:token=:[]@!$'()*+,&=-%60%20%3C%3E%7B",
        ),
        ("pkcs11:token=%00%01%02Hello%FF%FE", "pkcs11:token=%00%01%02Hello%FF%FE"),
        # id is binary and always fully encoded, as RFC 7512 recommends.
        ("pkcs11:id=123456", "pkcs11:id=%31%32%33%34%35%36"),
        ("pkcs11:id=%ab%CD", "pkcs11:id=%AB%CD"),
        ("PKCS11:token=a", "pkcs11:token=a"),
        ("pkcs11:?", "pkcs11:"),
        # "/" must be encoded in the path but not in the query; "&" the other way round.
        ("pkcs11:token=a%2Fb%26c?pin-source=%2Fd%26e", "pkcs11:token=a%2Fb&c?pin-source=/d%26e"),
        ("pkcs11:?pin-source=%7C/bin/pin", "pkcs11:?pin-source=|/bin/pin"),
        # "~" is unreserved in RFC 3986 and needs no encoding anywhere.
        ("pkcs11:token=%7E?x=%7e", "pkcs11:token=~?x=~"),
    ],
)
def test_canonical_form(text: str, canonical: str) -> None:
    assert parse(text).format() == canonical


@pytest.mark.parametrize(
    "text",
    [
        # p11-kit test-uri.c: refused by p11-kit too.
        "http:\\example.com\test",
        "pkcs11:object=Test%",
        "pkcs11:object=T%xxest",
        "pkcs11:token",
        "pkcs11:library-version=23.",
        "pkcs11:library-version=a.a",
        "pkcs11:library-version=.23",
        "pkcs11:library-version=1000",
        "pkcs11:library-version=2.1000",
        "pkcs11:?pin-value=blahblah%2",
        "pkcs11:?module-name=blahblah%2",
        "pkcs11:slot-id=123^456",
        # p11-kit accepts these; RFC 7512 does not (see test_uri_p11kit.py).
        "pkc\ns11: lib rary-desc\rrip  \n  tion =The%20Library;\n\n\nlibrary-manufacturer=\rMe",
        "pkcs11:type=unknown",
        "pkcs11:?module-path=blah%2Fblah",
        # OpenSC
        "pkcs11:id=%30%31%3",
        "pkcs11:?pin-value=the-pin;pin-source=file:/path/to/pin",
        "pkcs11:id=123456;",  # OpenSC accepts the trailing ';', the ABNF does not
        # go-pkcs11uri
        "pkcs11:slot-id=foo",
        "pkcs11:library-version=foo",
        "pkcs11:library-version=1.bar",
        "pkcs11:type=fobbar",
        # pk11-uri-parser
        "pkcs11:token=contains empty spaces",
        "pkcs11:token=contains#",
        "pkcs11:token=foo/bar",
        "pkcs11:vendor-abc=foo/bar",
        "pkcs11:pin-value=foo",
        "pkcs11:?token=foo",
        "pkcs11:library-version=1.",
        "pkcs11:library-version=SNAPSHOT",
    ],
)
def test_refused(text: str) -> None:
    with pytest.raises(UriError):
        parse(text)
