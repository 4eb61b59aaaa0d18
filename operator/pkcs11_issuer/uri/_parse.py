"""Strict parsing of RFC 7512 text into a Pkcs11Uri."""

from __future__ import annotations

from typing import Literal

from pkcs11_issuer.uri._errors import UriError
from pkcs11_issuer.uri._grammar import PATH_CHARS, QUERY_CHARS, decode
from pkcs11_issuer.uri._model import LITERAL_VALUED, Attribute, AttributeRules, Pkcs11Uri

_SCHEME = "pkcs11:"


def parse(text: str) -> Pkcs11Uri:
    """Parse a `pkcs11:` URI, refusing anything RFC 7512 does not allow.

    Raises UriError whose `position` is the 0-based index into `text` of the first offending
    character. Whitespace is refused rather than stripped: a URI split over lines must be
    joined by whoever split it.
    """
    # RFC 3986 makes the scheme case-insensitive; the canonical form writes it in lowercase.
    for position, wanted in enumerate(_SCHEME):
        # Compared in ASCII on purpose: str.lower() folds the Kelvin sign into "k".
        if position == len(text) or text[position] not in (wanted, wanted.upper()):
            raise UriError("a PKCS#11 URI starts with 'pkcs11:'", position)

    rules = AttributeRules()
    query_at = text.find("?", len(_SCHEME))
    path_end = len(text) if query_at < 0 else query_at
    path = _attributes(text, len(_SCHEME), path_end, "path", rules)
    query = () if query_at < 0 else _attributes(text, query_at + 1, len(text), "query", rules)
    return Pkcs11Uri(path, query)


def _attributes(
    text: str, start: int, end: int, component: Literal["path", "query"], rules: AttributeRules
) -> tuple[Attribute, ...]:
    separator = ";" if component == "path" else "&"
    found: list[Attribute] = []
    at = start
    # Reaching `end` right after a separator means the text ended with a stray one.
    while at < end or (found and at == end):
        stop = text.find(separator, at, end)
        stop = end if stop < 0 else stop
        if at == stop:
            stray = stop if stop < end else at - 1
            raise UriError(f"empty {component} attribute: remove the stray {separator!r}", stray)
        found.append(_attribute(text, at, stop, component, rules))
        at = stop + 1
    return tuple(found)


def _attribute(
    text: str, start: int, end: int, component: Literal["path", "query"], rules: AttributeRules
) -> Attribute:
    equals = text.find("=", start, end)
    if equals < 0:
        raise UriError(f"attribute {text[start:end]!r} has no '=': write NAME=VALUE", start)
    name = text[start:equals]
    rules.name(component, name, start)
    if name in LITERAL_VALUED:
        percent = text.find("%", equals + 1, end)
        if percent >= 0:
            raise UriError(f"{name} must be written without percent-encoding", percent)
    allowed = PATH_CHARS if component == "path" else QUERY_CHARS
    value = decode(text, equals + 1, end, allowed, component)
    rules.value(name, value, equals + 1)
    return name, value
