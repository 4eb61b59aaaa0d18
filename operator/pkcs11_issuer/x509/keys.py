"""`cryptography` private keys whose private half stays in the HSM.

Each class subclasses cryptography's own private-key base class, so `CertificateBuilder` and
`CertificateSigningRequestBuilder` accept it like any other key and call its `sign()`, which
hashes in software and has the HSM sign the digest (`Token.sign`). The public key is the one
read from the token's objects. Everything that would reveal the private key raises
`KeyNotExportableError`; decryption and key agreement are refused, because the project only
ever generates signing keys.
"""

from __future__ import annotations

from typing import Self

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, utils
from cryptography.hazmat.primitives.asymmetric.padding import MGF1, PSS, AsymmetricPadding, PKCS1v15
from cryptography.utils import Buffer

from pkcs11_issuer.hsm import KeyAlgorithm, KeyRef, Padding, Token
from pkcs11_issuer.x509.errors import KeyNotExportableError

_DIGEST_SIZES = {"sha256": 32, "sha384": 48, "sha512": 64}


def _hash_of(algorithm: object) -> tuple[str, bool]:
    """The hash name `Token.sign` takes, and whether the data is already its digest."""
    prehashed = isinstance(algorithm, utils.Prehashed)
    chosen = algorithm._algorithm if isinstance(algorithm, utils.Prehashed) else algorithm
    if not isinstance(chosen, hashes.HashAlgorithm) or chosen.name not in _DIGEST_SIZES:
        name = getattr(chosen, "name", type(chosen).__name__)
        raise UnsupportedAlgorithm(f"HSM keys sign with SHA-256, SHA-384 or SHA-512, not {name}")
    return chosen.name, prehashed


def _not_exportable(key: _HsmKey) -> KeyNotExportableError:
    return KeyNotExportableError(
        f"the private key {key.key_ref.label!r} lives in the HSM and cannot be exported"
    )


def _sign_only() -> UnsupportedAlgorithm:
    return UnsupportedAlgorithm("HSM keys are generated for signing only")


class _HsmKey:
    """What the three classes share: a token and a reference to a key on it, nothing secret."""

    _algorithm: KeyAlgorithm

    def __init__(self, token: Token, key: KeyRef) -> None:
        if key.spec.algorithm is not self._algorithm:
            raise TypeError(f"{type(self).__name__} is for {self._algorithm} keys, not {key.spec}")
        self._token = token
        self._key = key

    @property
    def token(self) -> Token:
        return self._token

    @property
    def key_ref(self) -> KeyRef:
        return self._key

    def private_bytes(
        self,
        encoding: serialization.Encoding,
        format: serialization.PrivateFormat,
        encryption_algorithm: serialization.KeySerializationEncryption,
    ) -> bytes:
        raise _not_exportable(self)

    # A handle to an HSM key: copies would name the same key, so there is nothing to copy.
    def __copy__(self) -> Self:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Self:
        return self

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self._key.spec} id={self._key.id.hex()} "
            f"label={self._key.label!r} on token {self._token.info.label!r}>"
        )


class HsmRSAPrivateKey(_HsmKey, rsa.RSAPrivateKey):
    _algorithm = KeyAlgorithm.RSA

    def __init__(self, token: Token, key: KeyRef) -> None:
        super().__init__(token, key)
        assert isinstance(key.public_key, rsa.RSAPublicKey)
        self._public = key.public_key

    def public_key(self) -> rsa.RSAPublicKey:
        return self._public

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def sign(
        self,
        data: bytes,
        padding: AsymmetricPadding,
        algorithm: utils.Prehashed | hashes.HashAlgorithm | utils.NoDigestInfo,
    ) -> bytes:
        hash_name, prehashed = _hash_of(algorithm)
        if isinstance(padding, PKCS1v15):
            return self._token.sign(
                self._key, bytes(data), hash_name=hash_name, prehashed=prehashed
            )
        if not isinstance(padding, PSS):
            raise UnsupportedAlgorithm(
                f"HSM RSA keys sign with PKCS#1 v1.5 or PSS, not {padding.name}"
            )
        mgf = padding.mgf
        if not isinstance(mgf, MGF1) or mgf._algorithm.name != hash_name:
            # The portable PKCS#11 path ties MGF1's hash to the signature hash.
            raise UnsupportedAlgorithm("PSS with HSM keys needs MGF1 over the signature hash")
        return self._token.sign(
            self._key,
            bytes(data),
            hash_name=hash_name,
            prehashed=prehashed,
            padding=Padding.PSS,
            salt_length=self._salt_length(padding, hash_name),
        )

    def _salt_length(self, pss: PSS, hash_name: str) -> int:
        # Resolved exactly as cryptography resolves it when it encodes the PSS parameters of
        # a certificate, so the salt used is the salt declared.
        digest_size = _DIGEST_SIZES[hash_name]
        salt = pss._salt_length
        if isinstance(salt, int):
            return salt
        if salt is PSS.DIGEST_LENGTH:
            return digest_size
        if salt is PSS.MAX_LENGTH:
            return (self.key_size - 1 + 7) // 8 - digest_size - 2
        raise ValueError("PSS.AUTO is only for verification; pick the salt length to sign with")

    def decrypt(self, ciphertext: bytes, padding: AsymmetricPadding) -> bytes:
        raise _sign_only()

    def private_numbers(self) -> rsa.RSAPrivateNumbers:
        raise _not_exportable(self)


class HsmECPrivateKey(_HsmKey, ec.EllipticCurvePrivateKey):
    _algorithm = KeyAlgorithm.ECDSA

    def __init__(self, token: Token, key: KeyRef) -> None:
        super().__init__(token, key)
        assert isinstance(key.public_key, ec.EllipticCurvePublicKey)
        self._public = key.public_key

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._public.curve

    @property
    def key_size(self) -> int:
        return self._public.curve.key_size

    def sign(self, data: Buffer, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        if not isinstance(signature_algorithm, ec.ECDSA):
            raise UnsupportedAlgorithm("HSM EC keys sign with ECDSA only")
        if signature_algorithm.deterministic_signing:
            raise UnsupportedAlgorithm("deterministic ECDSA (RFC 6979) is not offered by PKCS#11")
        hash_name, prehashed = _hash_of(signature_algorithm.algorithm)
        return self._token.sign(self._key, bytes(data), hash_name=hash_name, prehashed=prehashed)

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        raise _sign_only()

    def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
        raise _not_exportable(self)


class HsmEd25519PrivateKey(_HsmKey, ed25519.Ed25519PrivateKey):
    _algorithm = KeyAlgorithm.ED25519

    def __init__(self, token: Token, key: KeyRef) -> None:
        super().__init__(token, key)
        assert isinstance(key.public_key, ed25519.Ed25519PublicKey)
        self._public = key.public_key

    def public_key(self) -> ed25519.Ed25519PublicKey:
        return self._public

    def sign(self, data: Buffer) -> bytes:
        return self._token.sign(self._key, bytes(data), hash_name=None)

    def private_bytes_raw(self) -> bytes:
        raise _not_exportable(self)


HsmPrivateKey = HsmRSAPrivateKey | HsmECPrivateKey | HsmEd25519PrivateKey
_CLASSES: dict[KeyAlgorithm, type[HsmPrivateKey]] = {
    KeyAlgorithm.RSA: HsmRSAPrivateKey,
    KeyAlgorithm.ECDSA: HsmECPrivateKey,
    KeyAlgorithm.ED25519: HsmEd25519PrivateKey,
}


def hsm_private_key(token: Token, key: KeyRef) -> HsmPrivateKey:
    """The `cryptography` private key for `key` on `token`, of the class its algorithm needs."""
    return _CLASSES[key.spec.algorithm](token, key)
