"""X.509 certificates and CSRs built with `cryptography` and signed inside the HSM.

Public API:
- `hsm_private_key(token, key_ref)`: a `cryptography` private key (`HsmRSAPrivateKey`,
  `HsmECPrivateKey`, `HsmEd25519PrivateKey`) whose `sign()` runs in the HSM.
- `CertificateProfile`, `Subject`, `NameConstraints`, `NameConstraintItems`: what a certificate
  says, in cert-manager's terms, checked on construction; `parse_duration` for Go durations.
- `SignatureScheme(hash, rsa_pss)`: how a signer signs (default: chosen by its key).
- `build_csr(profile, key, scheme)`, `verify_csr(csr, profile)`.
- `Issuer(ca_certificate, ca_key, scheme).issue(csr, profile)`,
  `SelfSigner(key, scheme).issue(csr, profile)`, `self_sign(profile, key, scheme)`; each
  signer's `issue_for_key(public_key, profile)` skips the CSR for a key the caller holds.
- Errors: `ProfileError`, `CsrError`, `IssuerError` (all `X509Error`, a `ValueError`), and
  `KeyNotExportableError`.
"""

from pkcs11_issuer.x509.errors import (
    CsrError,
    IssuerError,
    KeyNotExportableError,
    ProfileError,
    X509Error,
)
from pkcs11_issuer.x509.issue import (
    Issuer,
    SelfSigner,
    Signer,
    SigningKey,
    build_csr,
    random_serial_number,
    self_sign,
    signature_parameters,
    subject_public_key_info,
    verify_csr,
)
from pkcs11_issuer.x509.keys import (
    HsmECPrivateKey,
    HsmEd25519PrivateKey,
    HsmPrivateKey,
    HsmRSAPrivateKey,
    hsm_private_key,
)
from pkcs11_issuer.x509.profile import (
    DEFAULT_DURATION,
    DEFAULT_USAGES,
    EXTENDED_KEY_USAGES,
    KEY_USAGES,
    MIN_DURATION,
    USAGES,
    CertificateProfile,
    NameConstraintItems,
    NameConstraints,
    SignatureScheme,
    Subject,
    extended_key_usage,
    format_duration,
    key_usage,
    parse_duration,
)

__all__ = [
    "DEFAULT_DURATION",
    "DEFAULT_USAGES",
    "EXTENDED_KEY_USAGES",
    "KEY_USAGES",
    "MIN_DURATION",
    "USAGES",
    "CertificateProfile",
    "CsrError",
    "HsmECPrivateKey",
    "HsmEd25519PrivateKey",
    "HsmPrivateKey",
    "HsmRSAPrivateKey",
    "Issuer",
    "IssuerError",
    "KeyNotExportableError",
    "NameConstraintItems",
    "NameConstraints",
    "ProfileError",
    "SelfSigner",
    "SignatureScheme",
    "Signer",
    "SigningKey",
    "Subject",
    "X509Error",
    "build_csr",
    "extended_key_usage",
    "format_duration",
    "hsm_private_key",
    "key_usage",
    "parse_duration",
    "random_serial_number",
    "self_sign",
    "signature_parameters",
    "subject_public_key_info",
    "verify_csr",
]
