"""Why a certificate cannot be issued. All are `ValueError`s: the request, the CSR or the
issuer is wrong, and retrying the same thing will not help."""

from __future__ import annotations


class X509Error(ValueError):
    """Base class of everything this package refuses."""


class ProfileError(X509Error):
    """The certificate asked for is not a sensible certificate (a CA that cannot sign, a
    duration under an hour, an unknown usage, ...)."""


class CsrError(X509Error):
    """The CSR's signature does not verify, its key is unacceptable, or it asks for something
    other than the profile it is issued against."""


class IssuerError(X509Error):
    """The issuer cannot sign this: its certificate is not a CA, is not valid now, does not
    belong to the signing key, or its path length forbids another CA below it."""


class KeyNotExportableError(TypeError):
    """An HSM key was asked for its private half. It lives in the HSM and never comes out;
    only its public key and its signatures do."""
