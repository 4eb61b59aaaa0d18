"""Everything PKCS#11: allowlisted modules, tokens and their sessions, keys, signatures.

Public API:
- `ModuleAllowlist(modules)`: name -> path from the operator's configuration; `.load(name)`.
- `Token(module, selector, pin)`: a token with a thread-safe session pool; generate, find,
  delete and sign with keys (`KeyRef`), store and read certificate objects; an optional
  `TokenObserver` hears of every call (its `CallKind`, duration and error), for metrics.
- `KeySpec.of(algorithm, size)`, `KeyAlgorithm`, `Padding`, `Pin`.
- The errors in `pkcs11_issuer.hsm.errors`, each telling the operator how to react.
"""

from pkcs11_issuer.hsm.errors import (
    AuthenticationError,
    ConfigurationError,
    HsmError,
    HsmUnavailableError,
    KeyExistsError,
    KeyNotFoundError,
    NotFoundError,
    TokenNotFoundError,
    UnsupportedError,
)
from pkcs11_issuer.hsm.keys import KeyAlgorithm, KeySpec, PublicKey
from pkcs11_issuer.hsm.module import Module, ModuleAllowlist
from pkcs11_issuer.hsm.pin import Pin
from pkcs11_issuer.hsm.session import CertificateObject, KeyRef
from pkcs11_issuer.hsm.signing import MECHANISMS_NEEDED, Padding
from pkcs11_issuer.hsm.token import (
    CallKind,
    Token,
    TokenInfo,
    TokenObserver,
    TokenSelector,
    find_token,
    list_tokens,
)

__all__ = [
    "MECHANISMS_NEEDED",
    "AuthenticationError",
    "CallKind",
    "CertificateObject",
    "ConfigurationError",
    "HsmError",
    "HsmUnavailableError",
    "KeyAlgorithm",
    "KeyExistsError",
    "KeyNotFoundError",
    "KeyRef",
    "KeySpec",
    "Module",
    "ModuleAllowlist",
    "NotFoundError",
    "Padding",
    "Pin",
    "PublicKey",
    "Token",
    "TokenInfo",
    "TokenNotFoundError",
    "TokenObserver",
    "TokenSelector",
    "UnsupportedError",
    "find_token",
    "list_tokens",
]
