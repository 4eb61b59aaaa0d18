"""The portable signing path: hash in software, sign the digest in the HSM.

Modules differ in which combined mechanisms they offer (SoftHSM 2.6 has no CKM_ECDSA_SHA256,
aws-kms-pkcs11 offers only CKM_ECDSA and CKM_RSA_PKCS), but every one of them has the raw
mechanisms. So the digest is computed here and the HSM signs it with CKM_ECDSA,
CKM_RSA_PKCS (over a DER DigestInfo) or CKM_RSA_PKCS_PSS; Ed25519 signs the message itself.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pkcs11 import MGF, Mechanism

from pkcs11_issuer.hsm.errors import UnsupportedError
from pkcs11_issuer.hsm.keys import KeyAlgorithm


class Padding(enum.StrEnum):
    PKCS1V15 = "pkcs1v15"
    PSS = "pss"


# DER DigestInfo prefixes (RFC 8017, section 9.2, note 1).
_DIGEST_INFO: dict[str, bytes] = {
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}
_PSS_PARAMS: dict[str, tuple[Mechanism, MGF]] = {
    "sha256": (Mechanism.SHA256, MGF.SHA256),
    "sha384": (Mechanism.SHA384, MGF.SHA384),
    "sha512": (Mechanism.SHA512, MGF.SHA512),
}
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}

MECHANISMS_NEEDED: dict[KeyAlgorithm, tuple[Mechanism, ...]] = {
    KeyAlgorithm.RSA: (Mechanism.RSA_PKCS_KEY_PAIR_GEN, Mechanism.RSA_PKCS),
    KeyAlgorithm.ECDSA: (Mechanism.EC_KEY_PAIR_GEN, Mechanism.ECDSA),
    KeyAlgorithm.ED25519: (Mechanism.EC_EDWARDS_KEY_PAIR_GEN, Mechanism.EDDSA),
}


@dataclass(frozen=True)
class SignRequest:
    """One raw PKCS#11 signing operation: mechanism, its parameter, and the bytes to sign."""

    mechanism: Mechanism
    parameter: tuple[int, int, int] | None
    payload: bytes


def digest(data: bytes, hash_name: str) -> bytes:
    h = hashes.Hash(_HASHES[hash_name]())
    h.update(data)
    return h.finalize()


def prepare(
    algorithm: KeyAlgorithm,
    data: bytes,
    *,
    hash_name: str | None,
    prehashed: bool = False,
    padding: Padding = Padding.PKCS1V15,
    salt_length: int | None = None,
) -> SignRequest:
    """Build the raw request for signing `data` (or its digest, when `prehashed`)."""
    if algorithm is KeyAlgorithm.ED25519:
        if hash_name is not None or prehashed:
            raise UnsupportedError("Ed25519 signs the message itself; no hash may be chosen")
        return SignRequest(Mechanism.EDDSA, None, data)
    if hash_name not in _HASHES:
        raise UnsupportedError(
            f"hash {hash_name!r} is not supported for signing (use sha256, sha384 or sha512)"
        )
    hashed = data if prehashed else digest(data, hash_name)
    size = _HASHES[hash_name]().digest_size
    if len(hashed) != size:
        raise UnsupportedError(f"a {hash_name} digest is {size} bytes, not {len(hashed)}")
    if algorithm is KeyAlgorithm.ECDSA:
        return SignRequest(Mechanism.ECDSA, None, hashed)
    if padding is Padding.PSS:
        hash_mechanism, mgf = _PSS_PARAMS[hash_name]
        salt = len(hashed) if salt_length is None else salt_length
        return SignRequest(Mechanism.RSA_PKCS_PSS, (hash_mechanism, mgf, salt), hashed)
    return SignRequest(Mechanism.RSA_PKCS, None, _DIGEST_INFO[hash_name] + hashed)


def finish(algorithm: KeyAlgorithm, raw_signature: bytes) -> bytes:
    """ECDSA comes back as r||s; X.509 and TLS want the DER Ecdsa-Sig-Value."""
    if algorithm is not KeyAlgorithm.ECDSA:
        return raw_signature
    half = len(raw_signature) // 2
    r = int.from_bytes(raw_signature[:half], "big")
    s = int.from_bytes(raw_signature[half:], "big")
    return encode_dss_signature(r, s)
