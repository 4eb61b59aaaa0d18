"""What went wrong, as a Kubernetes condition reason a user can act on.

Every failure of a reconcile becomes a `Problem`: the reason and message that go into the
resource's conditions and Events, and whether waiting helps (`transient`: retried with
backoff) or a person must change something first (re-checked slowly, and at once when the
resource or its issuer changes)."""

from __future__ import annotations

from dataclasses import dataclass

from pkcs11_issuer import hsm, x509
from pkcs11_issuer.controller.policy import PolicyError
from pkcs11_issuer.controller.spec import SpecError
from pkcs11_issuer.kube import ApiError


class Problem(Exception):
    """A failure already phrased for the user; raised by the controller's own checks."""

    def __init__(self, reason: str, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.transient = transient


@dataclass(frozen=True)
class _Kind:
    reason: str
    transient: bool = False


def _hsm_kind(error: hsm.HsmError) -> _Kind:
    if isinstance(error, hsm.AuthenticationError):
        return _Kind("PinLocked" if error.locked else "PinIncorrect")
    if isinstance(error, hsm.HsmUnavailableError):
        return _Kind("HsmUnavailable", transient=True)
    if isinstance(error, hsm.TokenNotFoundError):
        return _Kind("TokenNotFound")
    if isinstance(error, hsm.KeyNotFoundError):
        return _Kind("KeyNotFound")
    if isinstance(error, hsm.UnsupportedError):
        return _Kind("Unsupported")
    return _Kind("HsmRefused")


def as_problem(error: BaseException) -> Problem:
    """The Problem for any error a reconcile can meet; unknown errors say so plainly."""
    if isinstance(error, Problem):
        return error
    if isinstance(error, PolicyError):
        return Problem(error.reason, error.message, transient=error.reason == "HsmUnavailable")
    if isinstance(error, SpecError):
        return Problem("InvalidSpec", str(error))
    if isinstance(error, hsm.HsmError):
        kind = _hsm_kind(error)
        return Problem(kind.reason, str(error), transient=kind.transient)
    if isinstance(error, x509.X509Error):
        return Problem("IssuanceRefused", str(error))
    if isinstance(error, ApiError):
        return Problem(
            "ApiError",
            f"the Kubernetes API answered {error.status} {error.reason}: {error.message}",
            transient=True,
        )
    return Problem("InternalError", f"{type(error).__name__}: {error}", transient=True)
