"""Key algorithms the project generates, and reading an HSM public key into `cryptography`."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from pkcs11_issuer.hsm.errors import ConfigurationError, UnsupportedError

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


class KeyAlgorithm(enum.StrEnum):
    """cert-manager's names for `privateKey.algorithm`."""

    RSA = "RSA"
    ECDSA = "ECDSA"
    ED25519 = "Ed25519"


RSA_SIZES = (2048, 3072, 4096)
EC_SIZES = (256, 384)

# DER-encoded namedCurve OIDs, as CKA_EC_PARAMS carries them.
_CURVE_PARAMS: dict[int, bytes] = {
    256: bytes.fromhex("06082a8648ce3d030107"),  # 1.2.840.10045.3.1.7, P-256
    384: bytes.fromhex("06052b81040022"),  # 1.3.132.0.34, P-384
}
ED25519_PARAMS_OID = bytes.fromhex("06032b6570")  # 1.3.101.112
ED25519_PARAMS_NAME = b"\x13\x0cedwards25519"  # PrintableString, as PKCS#11 3.0 also allows
_CURVES_BY_PARAMS: dict[bytes, ec.EllipticCurve] = {
    _CURVE_PARAMS[256]: ec.SECP256R1(),
    _CURVE_PARAMS[384]: ec.SECP384R1(),
}


@dataclass(frozen=True)
class KeySpec:
    """What key to generate. `size` is bits for RSA, the curve size for ECDSA, 0 for Ed25519."""

    algorithm: KeyAlgorithm
    size: int

    @classmethod
    def of(cls, algorithm: str, size: int | None = None) -> KeySpec:
        """Validate cert-manager style input, filling cert-manager's default sizes."""
        try:
            alg = KeyAlgorithm(algorithm)
        except ValueError:
            names = ", ".join(a.value for a in KeyAlgorithm)
            raise ConfigurationError(
                f"unknown key algorithm {algorithm!r} (use one of {names})"
            ) from None
        if alg is KeyAlgorithm.RSA:
            size = size or 2048
            allowed: tuple[int, ...] = RSA_SIZES
        elif alg is KeyAlgorithm.ECDSA:
            size = size or 256
            allowed = EC_SIZES
        else:
            if size not in (None, 0, 256):
                raise ConfigurationError("Ed25519 keys have no size to choose")
            return cls(alg, 0)
        if size not in allowed:
            raise ConfigurationError(
                f"{alg.value} key size {size} is not supported (use one of "
                f"{', '.join(map(str, allowed))})"
            )
        return cls(alg, size)

    @property
    def ec_params(self) -> bytes:
        if self.algorithm is KeyAlgorithm.ECDSA:
            return _CURVE_PARAMS[self.size]
        if self.algorithm is KeyAlgorithm.ED25519:
            return ED25519_PARAMS_OID
        raise ValueError("RSA keys have no EC parameters")

    @property
    def signature_size(self) -> int:
        """Bytes of a raw PKCS#11 signature: the modulus for RSA, r||s for ECDSA and EdDSA."""
        if self.algorithm is KeyAlgorithm.RSA:
            return self.size // 8
        if self.algorithm is KeyAlgorithm.ECDSA:
            return 2 * ((self.size + 7) // 8)
        return 64

    def __str__(self) -> str:
        return (
            self.algorithm.value
            if self.algorithm is KeyAlgorithm.ED25519
            else (f"{self.algorithm.value}-{self.size}")
        )


def _unwrap_octet_string(value: bytes, raw_length: int) -> bytes:
    """CKA_EC_POINT is a DER OCTET STRING, but some modules return the bare point."""
    if len(value) == raw_length:
        return value
    if len(value) >= 2 and value[0] == 0x04:
        length = value[1]
        offset = 2
        if length & 0x80:
            count = length & 0x7F
            length = int.from_bytes(value[2 : 2 + count], "big")
            offset = 2 + count
        if offset + length == len(value) and length == raw_length:
            return value[offset:]
    raise UnsupportedError(f"cannot read CKA_EC_POINT of {len(value)} bytes")


def rsa_public_key(modulus: bytes, exponent: bytes) -> rsa.RSAPublicKey:
    return rsa.RSAPublicNumbers(
        int.from_bytes(exponent, "big"), int.from_bytes(modulus, "big")
    ).public_key()


def ec_public_key(params: bytes, point: bytes) -> PublicKey:
    if params in (ED25519_PARAMS_OID, ED25519_PARAMS_NAME):
        return ed25519.Ed25519PublicKey.from_public_bytes(_unwrap_octet_string(point, 32))
    curve = _CURVES_BY_PARAMS.get(params)
    if curve is None:
        raise UnsupportedError(f"EC key on an unsupported curve (params {params.hex()})")
    coordinate = (curve.key_size + 7) // 8
    raw = _unwrap_octet_string(point, 2 * coordinate + 1)
    return ec.EllipticCurvePublicKey.from_encoded_point(curve, raw)


def algorithm_of(public_key: PublicKey) -> KeySpec:
    if isinstance(public_key, rsa.RSAPublicKey):
        return KeySpec(KeyAlgorithm.RSA, public_key.key_size)
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return KeySpec(KeyAlgorithm.ECDSA, public_key.curve.key_size)
    return KeySpec(KeyAlgorithm.ED25519, 0)
