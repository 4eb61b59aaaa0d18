"""Properties over arbitrary attribute bytes: format -> parse is the identity, any legal spelling
of the same attributes parses to the same URI, and no input makes the parser fail other than
with UriError."""

from __future__ import annotations

import string

from hypothesis import given
from hypothesis import strategies as st

from pkcs11_issuer.uri import OBJECT_TYPES, PATH_ATTRIBUTES, QUERY_ATTRIBUTES, Pkcs11Uri, UriError
from pkcs11_issuer.uri import parse as parse_uri

Attributes = tuple[tuple[str, bytes], ...]

_STANDARD = {name.lower() for name in PATH_ATTRIBUTES + QUERY_ATTRIBUTES}
_FREE_PATH = [n for n in PATH_ATTRIBUTES if n not in {"type", "slot-id", "library-version"}]

vendor_names = st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=12).filter(
    lambda name: name.lower() not in _STANDARD
)

digits = st.text("0123456789", min_size=1, max_size=3)


@st.composite
def path_attributes(draw: st.DrawFn) -> Attributes:
    names = draw(st.lists(st.sampled_from(_FREE_PATH), unique=True))
    names += draw(st.lists(vendor_names, unique=True, max_size=3))
    attributes = [(name, draw(st.binary(max_size=24))) for name in names]
    if draw(st.booleans()):
        attributes.append(("type", draw(st.sampled_from(OBJECT_TYPES)).encode()))
    if draw(st.booleans()):
        zeros = "0" * draw(st.integers(0, 2))
        slot = draw(st.integers(0, 2**64 - 1))
        attributes.append(("slot-id", f"{zeros}{slot}".encode()))
    if draw(st.booleans()):
        major, minor = draw(st.integers(0, 255)), draw(st.integers(0, 255))
        version = f"{major}.{minor}" if draw(st.booleans()) else str(major)
        attributes.append(("library-version", version.encode()))
    return tuple(draw(st.permutations(attributes)))


@st.composite
def query_attributes(draw: st.DrawFn) -> Attributes:
    attributes: list[tuple[str, bytes]] = []
    pin = draw(st.sampled_from([None, "pin-source", "pin-value"]))
    if pin is not None:
        attributes.append((pin, draw(st.binary(max_size=24))))
    if draw(st.booleans()):
        attributes.append(("module-name", draw(st.binary(max_size=24))))
    if draw(st.booleans()):
        attributes.append(("module-path", b"/" + draw(st.binary(max_size=24))))
    # Vendor query attributes are the one kind that may repeat.
    for name in draw(st.lists(vendor_names, max_size=3)):
        attributes.extend(
            (name, draw(st.binary(max_size=8))) for _ in range(draw(st.integers(1, 2)))
        )
    return tuple(draw(st.permutations(attributes)))


uris = st.builds(Pkcs11Uri, path_attributes(), query_attributes())


@given(uris)
def test_format_then_parse_is_the_identity(uri: Pkcs11Uri) -> None:
    assert parse_uri(uri.format()) == uri


@given(uris)
def test_canonical_text_is_a_fixed_point(uri: Pkcs11Uri) -> None:
    text = uri.format()
    assert parse_uri(text).format() == text
    assert text.isascii()
    assert not any(char.isspace() for char in text)


_UNRESERVED = set(string.ascii_letters + string.digits + "-._~")
_PATH_LITERAL = _UNRESERVED | set(":[]@!$'()*+,=&")
_QUERY_LITERAL = _UNRESERVED | set(":[]@!$'()*+,=/?|")
# RFC 7512 has no percent-encoded spelling of these values.
_LITERAL_ONLY = {"type", "slot-id", "library-version"}


def _spell(data: st.DataObject, value: bytes, literal: set[str], name: str) -> str:
    """One of the many legal spellings of `value`: each byte that may stand unencoded is
    written plainly or percent-encoded, and each %XX picks its hex case."""
    if name in _LITERAL_ONLY:
        return value.decode()
    out = []
    for byte in value:
        if chr(byte) in literal and data.draw(st.booleans()):
            out.append(chr(byte))
        else:
            hexed = f"{byte:02X}"
            out.append("%" + (hexed.lower() if data.draw(st.booleans()) else hexed))
    return "".join(out)


@given(uris, st.data())
def test_every_legal_spelling_parses_to_the_same_uri(uri: Pkcs11Uri, data: st.DataObject) -> None:
    path = ";".join(
        f"{name}={_spell(data, value, _PATH_LITERAL, name)}" for name, value in uri.path
    )
    query = "&".join(
        f"{name}={_spell(data, value, _QUERY_LITERAL, name)}" for name, value in uri.query
    )
    scheme = data.draw(st.sampled_from(["pkcs11:", "PKCS11:", "Pkcs11:"]))
    text = scheme + path + (f"?{query}" if query or data.draw(st.booleans()) else "")
    assert parse_uri(text) == uri


@given(st.text())
def test_any_text_parses_or_raises_uri_error_with_a_position_inside_it(text: str) -> None:
    try:
        parse_uri(text)
    except UriError as error:
        assert error.position is not None
        assert 0 <= error.position <= len(text)


@given(st.text(string.printable, max_size=40).map(lambda tail: "pkcs11:" + tail))
def test_uri_like_text_parses_or_raises_uri_error(text: str) -> None:
    try:
        uri = parse_uri(text)
    except UriError as error:
        assert error.position is not None
        assert 0 <= error.position <= len(text)
    else:
        assert parse_uri(uri.format()) == uri
