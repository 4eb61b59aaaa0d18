"""The one exception the uri layer raises."""

from __future__ import annotations


class UriError(ValueError):
    """A URI, or an attribute given to the builder, that RFC 7512 does not allow.

    `position` is the 0-based index of the offending character in the text given to `parse()`
    (a Python string index). It is None for a value handed to the builder or the constructor,
    which has no text to point into.
    """

    def __init__(self, reason: str, position: int | None = None) -> None:
        self.reason = reason
        self.position = position
        super().__init__(reason if position is None else f"position {position}: {reason}")
