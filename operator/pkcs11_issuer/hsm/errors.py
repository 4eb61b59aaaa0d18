"""The few errors the operator can act on, translated from PKCS#11 return values.

Every PKCS#11 failure is mapped to one of these classes; each carries the CKR_* name (for
metrics and for people searching vendor documentation) and a hint that says what to do.
The operator's reaction depends only on the class:

- `HsmUnavailableError`: transient; retry with backoff (sessions and the module are re-opened).
- `AuthenticationError`: PIN incorrect, locked or expired; never retried automatically,
  because real HSMs lock, or even zeroise, after a few failed logins.
- `NotFoundError` (`TokenNotFoundError`, `KeyNotFoundError`): the named thing does not exist.
- `UnsupportedError`: the module lacks a mechanism or key type this project needs.
- `ConfigurationError`: the request itself is wrong (module not allowlisted, ambiguous token,
  a key id that is already taken, ...).
"""

from __future__ import annotations

import re

import pkcs11.exceptions as p11e


class HsmError(Exception):
    """Base class. `ckr` is the PKCS#11 return value name when one caused it."""

    def __init__(self, message: str, *, ckr: str | None = None, hint: str | None = None) -> None:
        self.message = message
        self.ckr = ckr
        self.hint = hint
        super().__init__(message)

    def __str__(self) -> str:
        text = self.message
        if self.ckr:
            text += f" ({self.ckr})"
        if self.hint:
            text += f": {self.hint}"
        return text


class HsmUnavailableError(HsmError):
    """The module, device or token is not answering; retrying later may succeed."""


class AuthenticationError(HsmError):
    """Login refused. Never retried automatically."""

    def __init__(
        self, message: str, *, ckr: str | None = None, hint: str | None = None, locked: bool = False
    ) -> None:
        super().__init__(message, ckr=ckr, hint=hint)
        self.locked = locked


class NotFoundError(HsmError):
    """A token or object named by the request does not exist."""


class TokenNotFoundError(NotFoundError):
    pass


class KeyNotFoundError(NotFoundError):
    pass


class UnsupportedError(HsmError):
    """The module does not offer a mechanism or key type that the request needs."""


class ConfigurationError(HsmError):
    """The request or the operator's configuration is wrong; retrying will not help."""


class KeyExistsError(ConfigurationError):
    """A key with the requested CKA_ID or CKA_LABEL is already on the token."""


_TRANSIENT = {
    p11e.DeviceError: "CKR_DEVICE_ERROR",
    p11e.DeviceMemory: "CKR_DEVICE_MEMORY",
    p11e.DeviceRemoved: "CKR_DEVICE_REMOVED",
    p11e.FunctionFailed: "CKR_FUNCTION_FAILED",
    p11e.GeneralError: "CKR_GENERAL_ERROR",
    p11e.HostMemory: "CKR_HOST_MEMORY",
    p11e.SessionClosed: "CKR_SESSION_CLOSED",
    p11e.SessionCount: "CKR_SESSION_COUNT",
    p11e.SessionHandleInvalid: "CKR_SESSION_HANDLE_INVALID",
    p11e.TokenNotPresent: "CKR_TOKEN_NOT_PRESENT",
    p11e.TokenNotRecognised: "CKR_TOKEN_NOT_RECOGNIZED",
    p11e.ObjectHandleInvalid: "CKR_OBJECT_HANDLE_INVALID",
    p11e.KeyHandleInvalid: "CKR_KEY_HANDLE_INVALID",
    p11e.UserNotLoggedIn: "CKR_USER_NOT_LOGGED_IN",
    p11e.OperationActive: "CKR_OPERATION_ACTIVE",
}
_AUTHENTICATION = {
    p11e.PinIncorrect: ("CKR_PIN_INCORRECT", False),
    p11e.PinLocked: ("CKR_PIN_LOCKED", True),
    p11e.PinExpired: ("CKR_PIN_EXPIRED", True),
    p11e.PinInvalid: ("CKR_PIN_INVALID", False),
    p11e.PinLenRange: ("CKR_PIN_LEN_RANGE", False),
    p11e.UserPinNotInitialized: ("CKR_USER_PIN_NOT_INITIALIZED", True),
}
_UNSUPPORTED = {
    p11e.MechanismInvalid: "CKR_MECHANISM_INVALID",
    p11e.MechanismParamInvalid: "CKR_MECHANISM_PARAM_INVALID",
    p11e.FunctionNotSupported: "CKR_FUNCTION_NOT_SUPPORTED",
    p11e.KeySizeRange: "CKR_KEY_SIZE_RANGE",
    p11e.DomainParamsInvalid: "CKR_DOMAIN_PARAMS_INVALID",
    p11e.KeyTypeInconsistent: "CKR_KEY_TYPE_INCONSISTENT",
    p11e.TemplateInconsistent: "CKR_TEMPLATE_INCONSISTENT",
    p11e.AttributeValueInvalid: "CKR_ATTRIBUTE_VALUE_INVALID",
    p11e.AttributeTypeInvalid: "CKR_ATTRIBUTE_TYPE_INVALID",
}
_CONFIGURATION = {
    p11e.TokenWriteProtected: "CKR_TOKEN_WRITE_PROTECTED",
    p11e.SessionReadOnly: "CKR_SESSION_READ_ONLY",
    p11e.SlotIDInvalid: "CKR_SLOT_ID_INVALID",
    p11e.ArgumentsBad: "CKR_ARGUMENTS_BAD",
    p11e.AttributeSensitive: "CKR_ATTRIBUTE_SENSITIVE",
}
# python-pkcs11 reports a few return values only as text.
_TEXT_CODES = (
    (re.compile(r"not initialized"), "CKR_CRYPTOKI_NOT_INITIALIZED"),
    (re.compile(r"already initialized"), "CKR_CRYPTOKI_ALREADY_INITIALIZED"),
    (re.compile(r"Unmapped error code (0x[0-9a-fA-F]+)"), ""),
)


# Return values of the calls made through `module.NativeCalls`, as the exceptions
# python-pkcs11 raises for them, so that one translation serves both paths.
_BY_CODE: dict[int, type[p11e.PKCS11Error]] = {
    0x02: p11e.HostMemory,
    0x03: p11e.SlotIDInvalid,
    0x05: p11e.GeneralError,
    0x06: p11e.FunctionFailed,
    0x07: p11e.ArgumentsBad,
    0x11: p11e.AttributeSensitive,
    0x12: p11e.AttributeTypeInvalid,
    0x13: p11e.AttributeValueInvalid,
    0x20: p11e.DataInvalid,
    0x21: p11e.DataLenRange,
    0x30: p11e.DeviceError,
    0x31: p11e.DeviceMemory,
    0x32: p11e.DeviceRemoved,
    0x54: p11e.FunctionNotSupported,
    0x60: p11e.KeyHandleInvalid,
    0x62: p11e.KeySizeRange,
    0x63: p11e.KeyTypeInconsistent,
    0x70: p11e.MechanismInvalid,
    0x71: p11e.MechanismParamInvalid,
    0x82: p11e.ObjectHandleInvalid,
    0x90: p11e.OperationActive,
    0x91: p11e.OperationNotInitialized,
    0xA0: p11e.PinIncorrect,
    0xA1: p11e.PinInvalid,
    0xA2: p11e.PinLenRange,
    0xA3: p11e.PinExpired,
    0xA4: p11e.PinLocked,
    0xB0: p11e.SessionClosed,
    0xB1: p11e.SessionCount,
    0xB3: p11e.SessionHandleInvalid,
    0xB5: p11e.SessionReadOnly,
    0xD0: p11e.TemplateIncomplete,
    0xD1: p11e.TemplateInconsistent,
    0xE0: p11e.TokenNotPresent,
    0xE1: p11e.TokenNotRecognised,
    0xE2: p11e.TokenWriteProtected,
    0x101: p11e.UserNotLoggedIn,
    0x102: p11e.UserPinNotInitialized,
    0x130: p11e.DomainParamsInvalid,
}
CKR_CRYPTOKI_NOT_INITIALIZED = 0x190


def pkcs11_error(rv: int) -> p11e.PKCS11Error:
    """The python-pkcs11 exception for a raw CK_RV."""
    known = _BY_CODE.get(rv)
    if known is not None:
        return known()
    if rv == CKR_CRYPTOKI_NOT_INITIALIZED:
        return p11e.PKCS11Error("Initialisation error (not initialized)")
    return p11e.PKCS11Error(f"Unmapped error code {rv:#x}")


def ckr_name(error: BaseException) -> str:
    """The CKR_* name behind a python-pkcs11 exception, for metrics and messages."""
    for table in (_TRANSIENT, _UNSUPPORTED, _CONFIGURATION):
        for cls, name in table.items():
            if type(error) is cls:
                return name
    for cls, (name, _locked) in _AUTHENTICATION.items():
        if type(error) is cls:
            return name
    text = str(error)
    for pattern, name in _TEXT_CODES:
        match = pattern.search(text)
        if match:
            return name or f"CKR_{match.group(1)}"
    return f"CKR_{type(error).__name__}"


def is_dead_session(error: BaseException) -> bool:
    """The session (not the whole module) is gone: open another one and try again."""
    return isinstance(error, p11e.SessionHandleInvalid | p11e.SessionClosed | p11e.UserNotLoggedIn)


def is_dead_module(error: BaseException) -> bool:
    """The device or the module's state is gone: finalize, initialize, log in again."""
    if isinstance(
        error,
        p11e.DeviceRemoved | p11e.DeviceError | p11e.TokenNotPresent | p11e.TokenNotRecognised,
    ):
        return True
    return ckr_name(error) == "CKR_CRYPTOKI_NOT_INITIALIZED"


def translate(error: BaseException, action: str) -> HsmError:
    """Map a python-pkcs11 exception raised while doing `action` to an `HsmError`."""
    if isinstance(error, HsmError):
        return error
    ckr = ckr_name(error)
    for cls, (_name, locked) in _AUTHENTICATION.items():
        if isinstance(error, cls):
            hint = (
                "the PIN is locked or unusable; unlock or reset it with the HSM's own tools"
                if locked
                else "check the PIN Secret; the operator will not try this PIN again until "
                "it changes or the login retry interval has passed"
            )
            return AuthenticationError(
                f"{action}: login refused", ckr=ckr, hint=hint, locked=locked
            )
    if isinstance(error, tuple(_UNSUPPORTED)):
        return UnsupportedError(
            f"{action}: the module does not support this",
            ckr=ckr,
            hint="run `pkcs11-issuer hsm check` to list the mechanisms it offers",
        )
    if isinstance(error, tuple(_CONFIGURATION)):
        return ConfigurationError(f"{action}: refused by the token", ckr=ckr)
    if isinstance(error, p11e.NoSuchToken):
        return TokenNotFoundError(f"{action}: token not found")
    if isinstance(error, p11e.NoSuchKey):
        return KeyNotFoundError(f"{action}: key not found")
    return HsmUnavailableError(
        f"{action}: the HSM did not complete the operation",
        ckr=ckr,
        hint="transient; it is retried with backoff",
    )
