"""The parsed form of a pkcs11: URI, the rules RFC 7512 sets beyond its characters, and its
canonical text."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, get_args

from pkcs11_issuer.uri._errors import UriError
from pkcs11_issuer.uri._grammar import NAME_CHARS, PATH_CHARS, QUERY_CHARS, encode

ObjectType = Literal["public", "private", "cert", "secret-key", "data"]
OBJECT_TYPES: tuple[ObjectType, ...] = get_args(ObjectType)

PATH_ATTRIBUTES = (
    "token",
    "manufacturer",
    "serial",
    "model",
    "library-manufacturer",
    "library-description",
    "library-version",
    "slot-description",
    "slot-manufacturer",
    "slot-id",
    "object",
    "type",
    "id",
)
QUERY_ATTRIBUTES = ("pin-source", "pin-value", "module-name", "module-path")

# The ABNF spells these values as literals and digit runs with no pct-encoded alternative, so
# "%63ert" is not "cert": accepting both would give one URI two spellings.
LITERAL_VALUED = frozenset({"type", "slot-id", "library-version"})

Attribute = tuple[str, bytes]

_STANDARD = frozenset(PATH_ATTRIBUTES + QUERY_ATTRIBUTES)
_DIGITS = frozenset(b"0123456789")
# CK_SLOT_ID is a CK_ULONG, 64 bits on the LP64 platforms the operator runs on.
_SLOT_ID_MAX = 2**64 - 1
# library-version fills CK_INFO.libraryVersion, whose major and minor are one CK_BYTE each.
_VERSION_PART_MAX = 255
# RFC 7512 recommends writing the binary "id" fully percent-encoded.
_ID_CHARS: frozenset[str] = frozenset()
_PIN_MASK = "***"


def _at(base: int | None, offset: int) -> int | None:
    return None if base is None else base + offset


class AttributeRules:
    """The rules above the character grammar, applied one attribute at a time in URI order so
    that an error always names the first offending attribute.

    Positions are those of the parsed text, or None when the attributes came from code.
    """

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], int | None] = {}

    def name(self, component: Literal["path", "query"], name: str, at: int | None) -> None:
        if not name:
            raise UriError("attribute name missing before '='", at)
        for offset, char in enumerate(name):
            if char not in NAME_CHARS:
                raise UriError(
                    f"character {char!r} is not allowed in an attribute name", _at(at, offset)
                )
        if component == "path" and name in QUERY_ATTRIBUTES:
            raise UriError(f"{name!r} is a query attribute: write it after '?'", at)
        if component == "query" and name in PATH_ATTRIBUTES:
            raise UriError(f"{name!r} is a path attribute: write it before '?'", at)
        if name not in _STANDARD and name.lower() in _STANDARD:
            # A misspelt standard name would otherwise pass as a vendor attribute and be ignored,
            # which for "PIN-VALUE" would hide a PIN from every policy that looks for one.
            raise UriError(f"attribute names are case-sensitive: write {name.lower()!r}", at)
        # RFC 7512: no attribute repeats in the path; in the query only vendor ones may.
        repeatable = component == "query" and name not in QUERY_ATTRIBUTES
        if not repeatable:
            if (component, name) in self._seen:
                first = self._seen[component, name]
                where = "" if first is None else f" (first at position {first})"
                raise UriError(f"duplicate {component} attribute {name!r}{where}", at)
            self._seen[component, name] = at
        if name in ("pin-value", "pin-source"):
            other = "pin-source" if name == "pin-value" else "pin-value"
            if ("query", other) in self._seen:
                raise UriError(
                    "pin-value and pin-source exclude each other: give the PIN one way", at
                )

    def value(self, name: str, value: bytes, at: int | None) -> None:
        if name == "type" and value not in {kind.encode() for kind in OBJECT_TYPES}:
            shown = value.decode("utf-8", "replace")
            raise UriError(
                f"unknown object type {shown!r}; expected one of {', '.join(OBJECT_TYPES)}", at
            )
        if name == "slot-id":
            _check_number(value, at, "slot-id must be a decimal number")
            if _too_big(value, _SLOT_ID_MAX):
                raise UriError(f"slot-id is larger than a CK_SLOT_ID holds ({_SLOT_ID_MAX})", at)
        if name == "library-version":
            major, dot, minor = value.partition(b".")
            parts = [(major, 0)] + ([(minor, len(major) + 1)] if dot else [])
            for part, offset in parts:
                _check_number(part, _at(at, offset), "library-version must be M or M.N in decimal")
                if _too_big(part, _VERSION_PART_MAX):
                    raise UriError(
                        f"library-version parts are one byte each (0-{_VERSION_PART_MAX})",
                        _at(at, offset),
                    )
        if name == "module-path" and not value.startswith(b"/"):
            raise UriError("module-path must be an absolute path", at)


def _check_number(value: bytes, at: int | None, reason: str) -> None:
    if not value:
        raise UriError(reason, at)
    for offset, byte in enumerate(value):
        if byte not in _DIGITS:
            raise UriError(reason, _at(at, offset))


def _too_big(digits: bytes, limit: int) -> bool:
    significant = digits.lstrip(b"0")
    # The length test first keeps int() away from absurdly long digit runs.
    return len(significant) > len(str(limit)) or int(significant or b"0") > limit


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def _replaced(
    attributes: tuple[Attribute, ...], name: str, value: str | bytes | None
) -> tuple[Attribute, ...]:
    kept = [attribute for attribute in attributes if attribute[0] != name]
    if value is None:
        return tuple(kept)
    where = next((i for i, attribute in enumerate(attributes) if attribute[0] == name), len(kept))
    kept.insert(where, (name, _as_bytes(value)))
    return tuple(kept)


@dataclass(frozen=True, repr=False)
class Pkcs11Uri:
    """A valid RFC 7512 URI: path and query attributes in order, values percent-decoded.

    Every instance obeys the same rules as `parse()`, so `format()` always parses back to an
    equal instance. Label-like values (token, object, manufacturer...) are UTF-8 in PKCS#11 and
    read as `str`; `id` is raw bytes; `get()` gives any value as bytes.
    """

    path: tuple[Attribute, ...] = ()
    query: tuple[Attribute, ...] = ()

    def __post_init__(self) -> None:
        rules = AttributeRules()
        for name, value in self.path:
            rules.name("path", name, None)
            rules.value(name, value, None)
        for name, value in self.query:
            rules.name("query", name, None)
            rules.value(name, value, None)

    @classmethod
    def build(
        cls,
        *,
        token: str | bytes | None = None,
        manufacturer: str | bytes | None = None,
        serial: str | bytes | None = None,
        model: str | bytes | None = None,
        library_manufacturer: str | bytes | None = None,
        library_description: str | bytes | None = None,
        library_version: tuple[int, int] | None = None,
        slot_description: str | bytes | None = None,
        slot_manufacturer: str | bytes | None = None,
        slot_id: int | None = None,
        object: str | bytes | None = None,
        type: ObjectType | None = None,
        id: bytes | str | None = None,
        pin_source: str | None = None,
        pin_value: str | None = None,
        module_name: str | None = None,
        module_path: str | None = None,
    ) -> Pkcs11Uri:
        """A URI from standard attributes; path attributes come out in RFC 7512 order."""
        version = None if library_version is None else "{}.{}".format(*library_version)
        path: dict[str, str | bytes | None] = {
            "token": token,
            "manufacturer": manufacturer,
            "serial": serial,
            "model": model,
            "library-manufacturer": library_manufacturer,
            "library-description": library_description,
            "library-version": version,
            "slot-description": slot_description,
            "slot-manufacturer": slot_manufacturer,
            "slot-id": None if slot_id is None else str(slot_id),
            "object": object,
            "type": type,
            "id": id,
        }
        query: dict[str, str | bytes | None] = {
            "pin-source": pin_source,
            "pin-value": pin_value,
            "module-name": module_name,
            "module-path": module_path,
        }
        return cls(
            tuple((name, _as_bytes(v)) for name, v in path.items() if v is not None),
            tuple((name, _as_bytes(v)) for name, v in query.items() if v is not None),
        )

    def with_path(self, name: str, value: str | bytes | None) -> Pkcs11Uri:
        """A copy whose path attribute `name` is `value` (in its old place), or gone if None."""
        return dataclasses.replace(self, path=_replaced(self.path, name, value))

    def with_query(self, name: str, value: str | bytes | None) -> Pkcs11Uri:
        """A copy whose query attribute `name` has this one value, or none if None."""
        return dataclasses.replace(self, query=_replaced(self.query, name, value))

    def get(self, name: str) -> bytes | None:
        """The first value of `name`, looked up in the path and then in the query."""
        for attribute, value in (*self.path, *self.query):
            if attribute == name:
                return value
        return None

    def format(self) -> str:
        """The canonical text: attributes in their order; characters that RFC 7512 lets stand
        unencoded in that component stay so; every other byte, and every byte of `id`, as %XX
        with uppercase hex."""
        return self._format(redact_pin=False)

    def __str__(self) -> str:
        return self.format()

    def __repr__(self) -> str:
        # repr() ends up in logs and tracebacks, where a PIN must never appear.
        return f"Pkcs11Uri({self._format(redact_pin=True)!r})"

    def _format(self, *, redact_pin: bool) -> str:
        path = ";".join(
            f"{name}={encode(value, _ID_CHARS if name == 'id' else PATH_CHARS)}"
            for name, value in self.path
        )
        query = "&".join(
            f"{name}={_PIN_MASK}"
            if redact_pin and name == "pin-value"
            else f"{name}={encode(value, QUERY_CHARS)}"
            for name, value in self.query
        )
        return f"pkcs11:{path}?{query}" if query else f"pkcs11:{path}"

    def _text(self, name: str) -> str | None:
        value = self.get(name)
        if value is None:
            return None
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UriError(f"{name} is not UTF-8 text; read its bytes with get({name!r})") from exc

    @property
    def token(self) -> str | None:
        """CK_TOKEN_INFO.label."""
        return self._text("token")

    @property
    def manufacturer(self) -> str | None:
        """CK_TOKEN_INFO.manufacturerID."""
        return self._text("manufacturer")

    @property
    def serial(self) -> str | None:
        """CK_TOKEN_INFO.serialNumber."""
        return self._text("serial")

    @property
    def model(self) -> str | None:
        """CK_TOKEN_INFO.model."""
        return self._text("model")

    @property
    def library_manufacturer(self) -> str | None:
        """CK_INFO.manufacturerID."""
        return self._text("library-manufacturer")

    @property
    def library_description(self) -> str | None:
        """CK_INFO.libraryDescription."""
        return self._text("library-description")

    @property
    def library_version(self) -> tuple[int, int] | None:
        """CK_INFO.libraryVersion as (major, minor); a missing minor is 0."""
        value = self.get("library-version")
        if value is None:
            return None
        major, _, minor = value.partition(b".")
        return int(major), int(minor or b"0")

    @property
    def slot_description(self) -> str | None:
        """CK_SLOT_INFO.slotDescription."""
        return self._text("slot-description")

    @property
    def slot_manufacturer(self) -> str | None:
        """CK_SLOT_INFO.manufacturerID."""
        return self._text("slot-manufacturer")

    @property
    def slot_id(self) -> int | None:
        """The CK_SLOT_ID."""
        value = self.get("slot-id")
        return None if value is None else int(value)

    @property
    def object(self) -> str | None:
        """CKA_LABEL of the object."""
        return self._text("object")

    @property
    def type(self) -> ObjectType | None:
        """CKA_CLASS of the object, by its RFC 7512 name."""
        value = self.get("type")
        return next((kind for kind in OBJECT_TYPES if kind.encode() == value), None)

    @property
    def id(self) -> bytes | None:
        """CKA_ID of the object: raw bytes."""
        return self.get("id")

    @property
    def pin_source(self) -> str | None:
        return self._text("pin-source")

    @property
    def pin_value(self) -> str | None:
        return self._text("pin-value")

    @property
    def module_name(self) -> str | None:
        return self._text("module-name")

    @property
    def module_path(self) -> str | None:
        return self._text("module-path")
