"""Character classes of the RFC 7512 ABNF and percent-encoding in both directions."""

from __future__ import annotations

import string

from pkcs11_issuer.uri._errors import UriError

_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
# pk11-res-avail: reserved characters that delimit nothing inside a pkcs11: URI.
_RES_AVAIL = frozenset(":[]@!$'()*+,=")

# pk11-pchar / pk11-qchar without pct-encoded. "&" is free in the path because only ";" splits
# it; "/", "?" and "|" are free in the query because only "&" splits it.
PATH_CHARS = _UNRESERVED | _RES_AVAIL | {"&"}
QUERY_CHARS = _UNRESERVED | _RES_AVAIL | {"/", "?", "|"}
# pk11-v-attr-nm-char; every standard attribute name is spelled with these too.
NAME_CHARS = frozenset(string.ascii_letters + string.digits + "-_")

_HEX_DIGITS = frozenset(string.hexdigits)


def decode(text: str, start: int, end: int, allowed: frozenset[str], component: str) -> bytes:
    """Percent-decode text[start:end], refusing any character the component does not allow."""
    out = bytearray()
    at = start
    while at < end:
        char = text[at]
        if char == "%":
            digits = text[at + 1 : min(at + 3, end)]
            if len(digits) != 2 or not set(digits) <= _HEX_DIGITS:
                raise UriError(
                    "'%' must be followed by two hexadecimal digits (write %25 for a literal '%')",
                    at,
                )
            out.append(int(digits, 16))
            at += 3
        elif char in allowed:
            out.append(ord(char))
            at += 1
        else:
            raise UriError(_unencoded_reason(char, component), at)
    return bytes(out)


def encode(value: bytes, allowed: frozenset[str]) -> str:
    """Percent-encode every byte outside `allowed`, with uppercase hex (RFC 3986 section 2.1)."""
    return "".join(chr(byte) if chr(byte) in allowed else f"%{byte:02X}" for byte in value)


def _unencoded_reason(char: str, component: str) -> str:
    if char == " ":
        return "a space must be percent-encoded as %20"
    if char == "#":
        return "'#' must be percent-encoded as %23 (a pkcs11: URI has no fragment)"
    if ord(char) < 0x20 or ord(char) == 0x7F:
        return f"control character {char!r} must be percent-encoded as %{ord(char):02X}"
    if 0xDC80 <= ord(char) <= 0xDCFF:
        # Python hands over a command-line byte that is not UTF-8 as this lone surrogate.
        byte = ord(char) - 0xDC00
        return f"byte 0x{byte:02X} (not UTF-8) must be percent-encoded as %{byte:02X}"
    if ord(char) > 0x7F:
        # surrogatepass: a stray surrogate from Python code still gets a hint instead of a crash.
        hint = "".join(f"%{byte:02X}" for byte in char.encode("utf-8", "surrogatepass"))
        return f"non-ASCII character {char!r} must be percent-encoded as UTF-8 ({hint})"
    return f"character {char!r} is not allowed unencoded in the {component}; write %{ord(char):02X}"
