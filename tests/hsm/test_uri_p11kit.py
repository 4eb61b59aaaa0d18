"""Differential test: p11-kit's own URI parser (libp11-kit.so.0, through ctypes) against ours.

For every URI both accept, p11-kit must hold exactly what our parse predicts it holds. Where the
two disagree on purpose -- p11-kit is lenient, ours follows RFC 7512 strictly -- the case is
listed at the end (P11KIT_IS_LENIENT and the tests after it) with the reason, and what p11-kit
does is asserted too, so a change on either side shows up here.
"""

from __future__ import annotations

import ctypes
import dataclasses
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pkcs11_issuer.uri import OBJECT_TYPES, Pkcs11Uri, UriError, parse
from support.tools import unavailable
from unit.test_uri_known_parsers import ACCEPTED
from unit.test_uri_rfc import RFC_EXAMPLES

FOR_ANY = 0x0000FFFF
URI_OK, BAD_VERSION = 0, -5
CKA_CLASS, CKA_LABEL, CKA_ID = 0x0, 0x3, 0x102
CKO = {"data": 0, "cert": 1, "public": 2, "private": 3, "secret-key": 4}
UNSET_SLOT = 2**64 - 1  # p11-kit's "no slot-id", (CK_SLOT_ID)-1
UNSET_VERSION = (255, 255)  # p11-kit's "no library-version", (CK_BYTE)-1 twice

# Our attribute name -> (the CK_*_INFO structure p11-kit keeps it in, field, field size).
FIXED_FIELDS = {
    "token": ("token", "label", 32),
    "manufacturer": ("token", "manufacturerID", 32),
    "model": ("token", "model", 16),
    "serial": ("token", "serialNumber", 16),
    "slot-description": ("slot", "slotDescription", 64),
    "slot-manufacturer": ("slot", "manufacturerID", 32),
    "library-description": ("module", "libraryDescription", 32),
    "library-manufacturer": ("module", "manufacturerID", 32),
}
C_STRINGS = ("pin-source", "pin-value", "module-name", "module-path")


class CkVersion(ctypes.Structure):
    _fields_ = [("major", ctypes.c_ubyte), ("minor", ctypes.c_ubyte)]


class CkInfo(ctypes.Structure):
    _fields_ = [
        ("cryptokiVersion", CkVersion),
        ("manufacturerID", ctypes.c_ubyte * 32),
        ("flags", ctypes.c_ulong),
        ("libraryDescription", ctypes.c_ubyte * 32),
        ("libraryVersion", CkVersion),
    ]


class CkSlotInfo(ctypes.Structure):
    _fields_ = [
        ("slotDescription", ctypes.c_ubyte * 64),
        ("manufacturerID", ctypes.c_ubyte * 32),
        ("flags", ctypes.c_ulong),
        ("hardwareVersion", CkVersion),
        ("firmwareVersion", CkVersion),
    ]


class CkTokenInfo(ctypes.Structure):
    # Only the leading fields the URI sets; p11-kit owns the whole structure.
    _fields_ = [
        ("label", ctypes.c_ubyte * 32),
        ("manufacturerID", ctypes.c_ubyte * 32),
        ("model", ctypes.c_ubyte * 16),
        ("serialNumber", ctypes.c_ubyte * 16),
    ]


class CkAttribute(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_ulong),
        ("pValue", ctypes.c_void_p),
        ("ulValueLen", ctypes.c_ulong),
    ]


@dataclass(frozen=True)
class P11KitView:
    """What p11-kit holds after parsing, in terms comparable with our attributes."""

    fields: dict[str, bytes]
    library_version: tuple[int, int]
    slot_id: int
    object: bytes | None
    id: bytes | None
    object_class: int | None
    strings: dict[str, bytes | None]
    vendor_query: dict[str, bytes | None]
    unrecognized: bool


class P11Kit:
    def __init__(self) -> None:
        try:
            lib = ctypes.CDLL("libp11-kit.so.0")
        except OSError:
            unavailable(
                "libp11-kit.so.0 (p11-kit's library)",
                "apt-get install libp11-kit0 (Debian/Ubuntu) or dnf install p11-kit (Fedora)",
            )
            raise  # not reached: unavailable() skips or fails the test
        self.libc = ctypes.CDLL(None)
        self.libc.free.argtypes = [ctypes.c_void_p]
        lib.p11_kit_uri_new.restype = ctypes.c_void_p
        lib.p11_kit_uri_free.argtypes = [ctypes.c_void_p]
        lib.p11_kit_uri_parse.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p]
        lib.p11_kit_uri_format.argtypes = [
            ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_void_p),
        ]  # fmt: skip
        lib.p11_kit_uri_any_unrecognized.argtypes = [ctypes.c_void_p]
        lib.p11_kit_uri_get_module_info.argtypes = [ctypes.c_void_p]
        lib.p11_kit_uri_get_module_info.restype = ctypes.POINTER(CkInfo)
        lib.p11_kit_uri_get_slot_info.argtypes = [ctypes.c_void_p]
        lib.p11_kit_uri_get_slot_info.restype = ctypes.POINTER(CkSlotInfo)
        lib.p11_kit_uri_get_token_info.argtypes = [ctypes.c_void_p]
        lib.p11_kit_uri_get_token_info.restype = ctypes.POINTER(CkTokenInfo)
        lib.p11_kit_uri_get_slot_id.argtypes = [ctypes.c_void_p]
        lib.p11_kit_uri_get_slot_id.restype = ctypes.c_ulong
        lib.p11_kit_uri_get_attribute.argtypes = [ctypes.c_void_p, ctypes.c_ulong]
        lib.p11_kit_uri_get_attribute.restype = ctypes.POINTER(CkAttribute)
        for name in C_STRINGS:
            getter = getattr(lib, f"p11_kit_uri_get_{name.replace('-', '_')}")
            getter.argtypes = [ctypes.c_void_p]
            getter.restype = ctypes.c_char_p
        lib.p11_kit_uri_get_vendor_query.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.p11_kit_uri_get_vendor_query.restype = ctypes.c_char_p
        self.lib = lib

    def parse(self, text: str, vendor_names: tuple[str, ...] = ()) -> P11KitView | int:
        """p11-kit's view of `text`, or its P11_KIT_URI_* error code."""
        handle = self.lib.p11_kit_uri_new()
        try:
            code = self.lib.p11_kit_uri_parse(text.encode("utf-8"), FOR_ANY, handle)
            return self._view(handle, vendor_names) if code == URI_OK else int(code)
        finally:
            self.lib.p11_kit_uri_free(handle)

    def format(self, text: str) -> str:
        """p11-kit's own formatting of what it parsed from `text`."""
        handle = self.lib.p11_kit_uri_new()
        out = ctypes.c_void_p()
        try:
            assert self.lib.p11_kit_uri_parse(text.encode("utf-8"), FOR_ANY, handle) == URI_OK
            assert self.lib.p11_kit_uri_format(handle, FOR_ANY, ctypes.byref(out)) == URI_OK
            assert out.value is not None
            return ctypes.string_at(out.value).decode("ascii")
        finally:
            self.libc.free(out)
            self.lib.p11_kit_uri_free(handle)

    def _view(self, handle: int, vendor_names: tuple[str, ...]) -> P11KitView:
        infos = {
            "module": self.lib.p11_kit_uri_get_module_info(handle).contents,
            "slot": self.lib.p11_kit_uri_get_slot_info(handle).contents,
            "token": self.lib.p11_kit_uri_get_token_info(handle).contents,
        }
        version = infos["module"].libraryVersion
        klass = self._attribute(handle, CKA_CLASS)
        return P11KitView(
            fields={
                name: bytes(getattr(infos[struct], field))
                for name, (struct, field, _) in FIXED_FIELDS.items()
            },
            library_version=(version.major, version.minor),
            slot_id=self.lib.p11_kit_uri_get_slot_id(handle),
            object=self._attribute(handle, CKA_LABEL),
            id=self._attribute(handle, CKA_ID),
            object_class=None if klass is None else int.from_bytes(klass, "little"),
            strings={
                name: getattr(self.lib, f"p11_kit_uri_get_{name.replace('-', '_')}")(handle)
                for name in C_STRINGS
            },
            vendor_query={
                name: self.lib.p11_kit_uri_get_vendor_query(handle, name.encode())
                for name in vendor_names
            },
            unrecognized=bool(self.lib.p11_kit_uri_any_unrecognized(handle)),
        )

    def _attribute(self, handle: int, kind: int) -> bytes | None:
        found = self.lib.p11_kit_uri_get_attribute(handle, kind)
        if not found:
            return None
        return ctypes.string_at(found.contents.pValue, found.contents.ulValueLen)


def _c_string(value: bytes | None) -> bytes | None:
    return None if value is None else value.split(b"\0", 1)[0]


_STANDARD_PATH = frozenset((*FIXED_FIELDS, "library-version", "slot-id", "object", "type", "id"))


def predicted(uri: Pkcs11Uri) -> P11KitView:
    """What p11-kit should hold for a URI our parser accepted."""
    fields: dict[str, bytes] = {}
    too_long = False
    for name, (_, _, size) in FIXED_FIELDS.items():
        value = uri.get(name)
        # p11-kit space-pads fixed-size fields and leaves an absent one all zero.
        if value is None or len(value) > size:
            too_long = too_long or value is not None
            fields[name] = bytes(size)
        else:
            fields[name] = value.ljust(size, b" ")
    vendor_path = any(name not in _STANDARD_PATH for name, _ in uri.path)
    return P11KitView(
        fields=fields,
        library_version=uri.library_version or UNSET_VERSION,
        slot_id=UNSET_SLOT if uri.slot_id is None else uri.slot_id,
        object=uri.get("object"),
        id=uri.id,
        object_class=None if uri.type is None else CKO[uri.type],
        # p11-kit keeps query values as C strings, so they end at the first NUL.
        strings={name: _c_string(uri.get(name)) for name in C_STRINGS},
        vendor_query={
            name: _c_string(dict(reversed(uri.query))[name]) for name in _vendor_query_names(uri)
        },
        # p11-kit marks a URI it cannot fully represent, so that it matches nothing.
        unrecognized=too_long or vendor_path,
    )


def _vendor_query_names(uri: Pkcs11Uri) -> tuple[str, ...]:
    return tuple(dict.fromkeys(n for n, _ in uri.query if n not in C_STRINGS))


def _p11kit_can_hold(uri: Pkcs11Uri) -> bool:
    # p11-kit spends the top CK_BYTE and CK_SLOT_ID values on "not set" (tested below).
    version = uri.library_version or (0, 0)
    return UNSET_VERSION[0] not in version and uri.slot_id != UNSET_SLOT


def _held(view: P11KitView | int) -> P11KitView | int:
    """The view without the unrecognised flag: p11-kit formats only what it could hold and
    drops the rest (vendor path attributes, over-long fields), so the flag does not survive
    p11-kit's own format -> parse."""
    return dataclasses.replace(view, unrecognized=False) if isinstance(view, P11KitView) else view


@pytest.fixture(scope="module")
def p11kit() -> P11Kit:
    return P11Kit()


# Every valid URI from the unit tests: the RFC 7512 examples and the other parsers' cases.
CORPUS = [
    text
    for text in ["".join(example.split()) for example in RFC_EXAMPLES]
    + [text for text, _, _ in ACCEPTED]
    if _p11kit_can_hold(parse(text))
]


@pytest.mark.parametrize("text", CORPUS, ids=[t[:60] for t in CORPUS])
def test_p11kit_reads_every_valid_uri_as_we_do(p11kit: P11Kit, text: str) -> None:
    uri = parse(text)
    names = _vendor_query_names(uri)
    assert p11kit.parse(text, names) == predicted(uri)
    # Our canonical form means the same to p11-kit as the text it came from.
    assert p11kit.parse(uri.format(), names) == predicted(uri)


# p11-kit takes a fixed-size field whose first byte is NUL for "not set" and leaves it out
# when it formats (tested below).
FORMATTABLE = [
    text
    for text in CORPUS
    if not any(value.startswith(b"\0") for name, value in parse(text).path if name in FIXED_FIELDS)
]


@pytest.mark.parametrize("text", FORMATTABLE, ids=[t[:60] for t in FORMATTABLE])
def test_we_accept_p11kit_formatting_of_every_valid_uri(p11kit: P11Kit, text: str) -> None:
    names = _vendor_query_names(parse(text))
    theirs = parse(p11kit.format(text))
    assert _held(p11kit.parse(theirs.format(), names)) == _held(p11kit.parse(text, names))


# --- generated URIs -----------------------------------------------------------------------

fixed_values = st.binary(max_size=40).filter(lambda v: not v.startswith(b"\0"))
vendor = st.sampled_from(["x-vendor", "vendor-aaa", "acme_slot"])


@st.composite
def uris(draw: st.DrawFn) -> Pkcs11Uri:
    path: list[tuple[str, bytes]] = []
    for name in draw(st.lists(st.sampled_from(list(FIXED_FIELDS)), unique=True)):
        path.append((name, draw(fixed_values)))
    if draw(st.booleans()):
        path.append(("object", draw(st.binary(max_size=40))))
    if draw(st.booleans()):
        path.append(("id", draw(st.binary(max_size=20))))
    if draw(st.booleans()):
        path.append(("type", draw(st.sampled_from(OBJECT_TYPES)).encode()))
    if draw(st.booleans()):
        path.append(("slot-id", str(draw(st.integers(0, UNSET_SLOT - 1))).encode()))
    if draw(st.booleans()):
        major, minor = draw(st.integers(0, 254)), draw(st.integers(0, 254))
        path.append(("library-version", f"{major}.{minor}".encode()))
    if draw(st.booleans()):
        path.append((draw(vendor), draw(st.binary(max_size=8))))
    query: list[tuple[str, bytes]] = []
    pin = draw(st.sampled_from([None, "pin-source", "pin-value"]))
    if pin is not None:
        query.append((pin, draw(st.binary(max_size=20))))
    if draw(st.booleans()):
        query.append(("module-name", draw(st.binary(max_size=20))))
    if draw(st.booleans()):
        query.append(("module-path", b"/" + draw(st.binary(max_size=20))))
    if draw(st.booleans()):
        query.append((draw(vendor), draw(st.binary(max_size=8))))
    return Pkcs11Uri(tuple(draw(st.permutations(path))), tuple(draw(st.permutations(query))))


@settings(max_examples=300)
@given(uri=uris())
def test_p11kit_reads_our_canonical_form_as_we_do(p11kit: P11Kit, uri: Pkcs11Uri) -> None:
    assert p11kit.parse(uri.format(), _vendor_query_names(uri)) == predicted(uri)


@settings(max_examples=300)
@given(uri=uris())
def test_we_accept_p11kit_formatting_and_it_means_the_same(p11kit: P11Kit, uri: Pkcs11Uri) -> None:
    names = _vendor_query_names(uri)
    theirs = parse(p11kit.format(uri.format()))  # p11-kit's output never trips our strictness
    assert _held(p11kit.parse(theirs.format(), names)) == _held(p11kit.parse(uri.format(), names))


# --- deliberate differences ---------------------------------------------------------------

# Text p11-kit accepts (P11_KIT_URI_OK) and we refuse, each with the RFC 7512 reason.
P11KIT_IS_LENIENT = [
    ("pkcs11:token=a b", "p11-kit strips whitespace; the ABNF has none, a space is %20"),
    ("pkc\ns11:token=a", "p11-kit strips whitespace even inside the scheme"),
    ("pkcs11:token=a/b", "'/' is not a pk11-pchar: it must be %2F in the path"),
    ("pkcs11:token=a#b", "'#' would start a fragment; RFC 7512 has none"),
    ("pkcs11:token=á", "non-ASCII must be percent-encoded UTF-8"),
    ("pkcs11:token=a;", "the ABNF has no empty attribute after ';'"),
    ("pkcs11:token=a;token=b", "path attributes must not repeat; p11-kit keeps the last"),
    ("pkcs11:?pin-value=1&pin-value=2", "standard query attributes must not repeat"),
    ("pkcs11:?pin-value=1&pin-source=file:/p", "pin-value and pin-source exclude each other"),
    ("pkcs11:pin-source=file:/p", "p11-kit takes pin-* in the path for backward compatibility"),
    ("pkcs11:?module-path=lib.so", "a relative module-path must be refused"),
    ("pkcs11:type=unknown", "p11-kit flags it unrecognised; the ABNF has five types"),
    ("pkcs11:type=%63ert", "pk11-type is a literal, with no percent-encoded spelling"),
    ("pkcs11:Token=a", "p11-kit flags it unrecognised; we name the right spelling"),
    ("pkcs11:slot-id=", "pk11-slot-id is 1*DIGIT; p11-kit reads it as slot 0"),
    ("pkcs11:slot-id=18446744073709551616", "over CK_SLOT_ID; p11-kit wraps it to 0"),
]


@pytest.mark.parametrize(("text", "why"), P11KIT_IS_LENIENT, ids=[c[0] for c in P11KIT_IS_LENIENT])
def test_p11kit_accepts_what_rfc_7512_refuses(p11kit: P11Kit, text: str, why: str) -> None:
    assert isinstance(p11kit.parse(text), P11KitView), why
    with pytest.raises(UriError):
        parse(text)


def test_p11kit_refuses_version_255_which_is_a_valid_ck_byte(p11kit: P11Kit) -> None:
    # p11-kit uses 255 internally to mean "no version", so it cannot hold a real 255.
    assert p11kit.parse("pkcs11:library-version=255") == BAD_VERSION
    assert parse("pkcs11:library-version=255").library_version == (255, 0)


def test_p11kit_mistakes_a_double_semicolon_for_the_query(p11kit: P11Kit) -> None:
    # After ";;" p11-kit parses the rest as query attributes; we refuse the empty attribute.
    assert p11kit.format("pkcs11:token=a;;serial=b") == "pkcs11:token=a?serial=b"
    with pytest.raises(UriError, match="stray ';'"):
        parse("pkcs11:token=a;;serial=b")


# Text both accept but read differently.
def test_legacy_object_type_is_a_vendor_attribute_to_us(p11kit: P11Kit) -> None:
    view = p11kit.parse("pkcs11:object-type=cert")
    assert isinstance(view, P11KitView)
    assert view.object_class == CKO["cert"]
    assert parse("pkcs11:object-type=cert").type is None


def test_vendor_path_attributes_are_kept_by_us_and_unmatchable_in_p11kit(p11kit: P11Kit) -> None:
    view = p11kit.parse("pkcs11:token=a;x-acme=1")
    assert isinstance(view, P11KitView) and view.unrecognized
    assert p11kit.format("pkcs11:token=a;x-acme=1") == "pkcs11:token=a"
    assert parse("pkcs11:token=a;x-acme=1").get("x-acme") == b"1"


def test_slot_id_max_means_no_slot_to_p11kit(p11kit: P11Kit) -> None:
    view = p11kit.parse("pkcs11:slot-id=18446744073709551615")
    assert isinstance(view, P11KitView) and view.slot_id == UNSET_SLOT
    assert p11kit.format("pkcs11:slot-id=18446744073709551615") == "pkcs11:"
    assert parse("pkcs11:slot-id=18446744073709551615").slot_id == UNSET_SLOT


def test_nul_ends_a_query_value_in_p11kit_only(p11kit: P11Kit) -> None:
    view = p11kit.parse("pkcs11:?pin-source=file:/a%00b")
    assert isinstance(view, P11KitView) and view.strings["pin-source"] == b"file:/a"
    assert parse("pkcs11:?pin-source=file:/a%00b").pin_source == "file:/a\0b"


def test_a_leading_nul_unsets_a_fixed_field_in_p11kit(p11kit: P11Kit) -> None:
    assert p11kit.format("pkcs11:token=%00a;model=m") == "pkcs11:model=m"
    assert parse("pkcs11:token=%00a;model=m").get("token") == b"\0a"


def test_p11kit_orders_attributes_its_own_way_we_keep_the_given_order(p11kit: P11Kit) -> None:
    text = "pkcs11:token=t;object=o;id=%01?bbb=2&aaa=1"
    assert p11kit.format(text) == "pkcs11:token=t;id=%01;object=o?aaa=1&bbb=2"
    assert parse(text).format() == text
