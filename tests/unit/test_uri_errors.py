"""Everything the parser refuses, and the 0-based position it blames for each.

`^` in the comments marks the blamed character, so a reader can check each position by eye.
"""

from __future__ import annotations

import pytest

from pkcs11_issuer.uri import Pkcs11Uri, UriError, parse

REFUSED = [
    # --- scheme
    ("", 0, "starts with 'pkcs11:'"),
    ("http://example.com/key", 0, "starts with 'pkcs11:'"),
    ("pkcs12:token=a", 5, "starts with 'pkcs11:'"),
    ("pkcs11", 6, "starts with 'pkcs11:'"),
    (" pkcs11:token=a", 0, "starts with 'pkcs11:'"),
    # --- attribute shape
    ("pkcs11:token", 7, "has no '='"),
    #        ^
    ("pkcs11:token=a;serial", 15, "has no '='"),
    #                ^
    ("pkcs11:?pin-source", 8, "has no '='"),
    ("pkcs11:=abc", 7, "name missing"),
    ("pkcs11:token=a;", 14, "stray ';'"),
    #               ^
    ("pkcs11:;token=a", 7, "stray ';'"),
    ("pkcs11:token=a;;serial=b", 15, "stray ';'"),
    ("pkcs11:?pin-source=a&", 20, "stray '&'"),
    ("pkcs11:?&pin-source=a", 8, "stray '&'"),
    ("pkcs11:tok en=a", 10, "not allowed in an attribute name"),
    #           ^
    ("pkcs11:tok.en=a", 10, "not allowed in an attribute name"),
    ("pkcs11:x%41=a", 8, "not allowed in an attribute name"),
    # --- percent-encoding
    ("pkcs11:object=Test%", 18, "two hexadecimal digits"),
    #                   ^
    ("pkcs11:object=T%xxest", 15, "two hexadecimal digits"),
    ("pkcs11:id=%30%31%3", 16, "two hexadecimal digits"),
    ("pkcs11:token=%2;serial=1", 13, "two hexadecimal digits"),
    ("pkcs11:?pin-value=blahblah%2", 26, "two hexadecimal digits"),
    ("pkcs11:token=%+1", 13, "two hexadecimal digits"),
    # --- characters the grammar does not allow unencoded
    ("pkcs11:token=a b", 14, "space must be percent-encoded as %20"),
    #               ^
    ("pkcs11:token=a\nb", 14, "control character"),
    ("pkcs11:token=a\tb", 14, "control character"),
    ("pkcs11:token=ab ", 15, "space"),
    ("pkcs11:token=á", 13, "(%C3%A1)"),
    ("pkcs11:token=a/b", 14, "write %2F"),
    ("pkcs11:token=a#b", 14, "%23"),
    ("pkcs11:token=a|b", 14, "write %7C"),
    ('pkcs11:token=a"b', 14, "write %22"),
    ("pkcs11:token=<a>", 13, "write %3C"),
    ("pkcs11:token=a\\b", 14, "write %5C"),
    ("pkcs11:?pin-value=the-pin;pin-source=file:/p", 25, "write %3B"),
    #                          ^
    ("pkcs11:?pin-source=a#b", 20, "%23"),
    ("pkcs11:?pin-source=a^b", 20, "write %5E"),
    # --- duplicates
    ("pkcs11:token=a;token=b", 15, "duplicate path attribute 'token' (first at position 7)"),
    #                ^
    ("pkcs11:id=%01;object=k;id=%02", 23, "duplicate path attribute 'id'"),
    ("pkcs11:x-vendor=1;x-vendor=2", 18, "duplicate path attribute 'x-vendor'"),
    ("pkcs11:?pin-source=a&pin-source=b", 21, "duplicate query attribute 'pin-source'"),
    ("pkcs11:?module-name=a&module-name=b", 22, "duplicate query attribute 'module-name'"),
    # --- type
    ("pkcs11:type=foo", 12, "unknown object type 'foo'"),
    #             ^
    ("pkcs11:type=", 12, "unknown object type ''"),
    ("pkcs11:type=CERT", 12, "unknown object type 'CERT'"),
    ("pkcs11:type=secretkey", 12, "unknown object type"),
    ("pkcs11:type=%63ert", 12, "without percent-encoding"),
    # --- slot-id
    ("pkcs11:slot-id=foo", 15, "slot-id must be a decimal number"),
    #                ^
    ("pkcs11:slot-id=12a", 17, "slot-id must be a decimal number"),
    ("pkcs11:slot-id=", 15, "slot-id must be a decimal number"),
    ("pkcs11:slot-id=-1", 15, "slot-id must be a decimal number"),
    ("pkcs11:slot-id=1.5", 16, "slot-id must be a decimal number"),
    ("pkcs11:slot-id=123^456", 18, "write %5E"),
    ("pkcs11:slot-id=%31", 15, "without percent-encoding"),
    ("pkcs11:slot-id=18446744073709551616", 15, "larger than a CK_SLOT_ID"),
    ("pkcs11:slot-id=" + "9" * 5000, 15, "larger than a CK_SLOT_ID"),
    # --- library-version
    ("pkcs11:library-version=foo", 23, "M or M.N"),
    #                        ^
    ("pkcs11:library-version=1.bar", 25, "M or M.N"),
    ("pkcs11:library-version=23.", 26, "M or M.N"),
    ("pkcs11:library-version=.23", 23, "M or M.N"),
    ("pkcs11:library-version=a.a", 23, "M or M.N"),
    ("pkcs11:library-version=1.2.3", 26, "M or M.N"),
    ("pkcs11:library-version=", 23, "M or M.N"),
    ("pkcs11:library-version=1000", 23, "one byte each (0-255)"),
    ("pkcs11:library-version=2.1000", 25, "one byte each (0-255)"),
    ("pkcs11:library-version=2.256", 25, "one byte each (0-255)"),
    # --- query rules
    ("pkcs11:?pin-value=1234&pin-source=file:/p", 23, "exclude each other"),
    #                        ^
    ("pkcs11:?pin-source=file:/p&pin-value=1234", 27, "exclude each other"),
    ("pkcs11:?module-path=lib/x.so", 20, "module-path must be an absolute path"),
    #                     ^
    ("pkcs11:?module-path=", 20, "module-path must be an absolute path"),
    ("pkcs11:?module-path=blah%2Fblah", 20, "module-path must be an absolute path"),
    # --- a name in the wrong place or the wrong case
    ("pkcs11:pin-value=1234", 7, "'pin-value' is a query attribute"),
    ("pkcs11:token=a;pin-source=file:/p", 15, "'pin-source' is a query attribute"),
    ("pkcs11:module-path=/x.so", 7, "'module-path' is a query attribute"),
    ("pkcs11:?token=a", 8, "'token' is a path attribute"),
    ("pkcs11:?slot-id=1", 8, "'slot-id' is a path attribute"),
    ("pkcs11:Token=a", 7, "write 'token'"),
    ("pkcs11:?PIN-VALUE=1234", 8, "write 'pin-value'"),
    ("pkcs11:?Module-Path=/x.so", 8, "write 'module-path'"),
]


@pytest.mark.parametrize(("text", "position", "reason"), REFUSED, ids=[c[0][:60] for c in REFUSED])
def test_refused_with_reason_and_position(text: str, position: int, reason: str) -> None:
    with pytest.raises(UriError) as caught:
        parse(text)
    assert caught.value.position == position
    assert reason in caught.value.reason
    assert str(caught.value) == f"position {position}: {caught.value.reason}"


def test_uri_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="position 14"):
        parse("pkcs11:token=a b")


def test_the_first_offending_attribute_is_the_one_blamed() -> None:
    with pytest.raises(UriError) as caught:
        parse("pkcs11:type=foo;slot-id=x;token=a b")
    assert caught.value.position == 12


def test_an_undecodable_command_line_byte_is_named_as_a_byte() -> None:
    # On POSIX, Python turns argv bytes that are not UTF-8 into lone surrogates.
    raw = b"pkcs11:token=\xff".decode("utf-8", "surrogateescape")
    with pytest.raises(UriError) as caught:
        parse(raw)
    assert caught.value.position == 13
    assert "byte 0xFF" in caught.value.reason
    assert "%FF" in caught.value.reason


@pytest.mark.parametrize(
    ("path", "query", "reason"),
    [
        ((("type", b"nope"),), (), "unknown object type"),
        ((("slot-id", b"x1"),), (), "decimal number"),
        ((("library-version", b"1.2.3"),), (), "M or M.N"),
        ((("token", b"a"), ("token", b"b")), (), "duplicate path attribute"),
        ((("bad name", b"a"),), (), "attribute name"),
        ((("", b"a"),), (), "name missing"),
        ((("pin-value", b"1"),), (), "query attribute"),
        ((), (("id", b"1"),), "path attribute"),
        ((), (("module-path", b"rel"),), "absolute path"),
        ((), (("pin-value", b"1"), ("pin-source", b"f")), "exclude each other"),
    ],
)
def test_constructor_applies_the_parser_rules_without_a_position(
    path: tuple[tuple[str, bytes], ...], query: tuple[tuple[str, bytes], ...], reason: str
) -> None:
    with pytest.raises(UriError) as caught:
        Pkcs11Uri(path, query)
    assert caught.value.position is None
    assert reason in str(caught.value)
    assert "position" not in str(caught.value)
