"""A PIN that cannot leak by accident: it never prints, logs or serialises as its value."""

from __future__ import annotations

from pathlib import Path


class Pin:
    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not value:
            raise ValueError("the PIN is empty")
        self._value = value

    @classmethod
    def from_file(cls, path: str | Path) -> Pin:
        """Read a PIN file; one trailing newline (as `echo` writes) is not part of the PIN."""
        text = Path(path).read_text(encoding="utf-8")
        return cls(text.removesuffix("\n").removesuffix("\r"))

    def reveal(self) -> bytes:
        """The PIN's bytes, for C_Login only."""
        return self._value.encode("utf-8")

    def __repr__(self) -> str:
        return "Pin(<redacted>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pin) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> None:  # type: ignore[override]
        raise TypeError("a Pin is not serialisable")
