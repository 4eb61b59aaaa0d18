"""HSM keys as `cryptography` private keys: they sign through the token, verify with the public
key read from it, and refuse everything that would take the private key out."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator

import pytest
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils

from pkcs11_issuer.hsm import MECHANISMS_NEEDED, KeyAlgorithm, KeyRef, KeySpec, Token
from pkcs11_issuer.hsm.errors import UnsupportedError
from pkcs11_issuer.x509 import (
    HsmECPrivateKey,
    HsmEd25519PrivateKey,
    HsmRSAPrivateKey,
    KeyNotExportableError,
    hsm_private_key,
)

MESSAGE = b"signed by a key that never leaves the HSM"


NewKey = Callable[[KeySpec], KeyRef | None]


@pytest.fixture
def new_key(token: Token, key_name: tuple[bytes, str]) -> Iterator[NewKey]:
    """Generate this test's key; None (after checking the refusal) where the token path does
    not offer the algorithm, as p11-kit 0.24 does not offer Ed25519. Deleted afterwards."""
    key_id, label = key_name

    def generate(spec: KeySpec) -> KeyRef | None:
        if not set(MECHANISMS_NEEDED[spec.algorithm]) <= token.mechanisms():
            with pytest.raises(UnsupportedError):
                token.generate_key(spec, id=key_id, label=label)
            return None
        return token.generate_key(spec, id=key_id, label=label)

    yield generate
    token.delete_key(id=key_id)


def test_rsa_key_signs_pkcs1v15_and_pss_as_cryptography_would(
    token: Token, new_key: NewKey
) -> None:
    ref = new_key(KeySpec.of("RSA", 2048))
    assert ref is not None
    key = hsm_private_key(token, ref)
    assert isinstance(key, rsa.RSAPrivateKey) and isinstance(key, HsmRSAPrivateKey)
    public = key.public_key()
    assert public == ref.public_key
    assert key.key_size == 2048
    for algorithm in (hashes.SHA256(), hashes.SHA384(), hashes.SHA512()):
        public.verify(
            key.sign(MESSAGE, padding.PKCS1v15(), algorithm), MESSAGE, padding.PKCS1v15(), algorithm
        )
    sha256 = hashes.SHA256()
    for salt in (padding.PSS.DIGEST_LENGTH, padding.PSS.MAX_LENGTH, 20):
        pss = padding.PSS(padding.MGF1(sha256), salt)
        signature = key.sign(MESSAGE, pss, sha256)
        # Verifying with the exact salt length proves the salt used is the salt declared.
        expected = {padding.PSS.DIGEST_LENGTH: 32, padding.PSS.MAX_LENGTH: 256 - 32 - 2}.get(
            salt, salt
        )
        public.verify(signature, MESSAGE, padding.PSS(padding.MGF1(sha256), expected), sha256)
    digest = hashes.Hash(sha256)
    digest.update(MESSAGE)
    prehashed = key.sign(digest.finalize(), padding.PKCS1v15(), utils.Prehashed(sha256))
    public.verify(prehashed, MESSAGE, padding.PKCS1v15(), sha256)


def test_rsa_key_refuses_what_the_portable_path_cannot_do(token: Token, new_key: NewKey) -> None:
    ref = new_key(KeySpec.of("RSA", 2048))
    assert ref is not None
    key = hsm_private_key(token, ref)
    assert isinstance(key, HsmRSAPrivateKey)
    with pytest.raises(UnsupportedAlgorithm, match="not sha1"):
        key.sign(MESSAGE, padding.PKCS1v15(), hashes.SHA1())  # noqa: S303 - refused on purpose
    with pytest.raises(UnsupportedAlgorithm, match="MGF1 over the signature hash"):
        key.sign(MESSAGE, padding.PSS(padding.MGF1(hashes.SHA512()), 32), hashes.SHA256())
    with pytest.raises(ValueError, match=r"PSS.AUTO"):
        key.sign(
            MESSAGE, padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.AUTO), hashes.SHA256()
        )
    with pytest.raises(UnsupportedAlgorithm, match="signing only"):
        key.decrypt(b"x" * 256, padding.PKCS1v15())


def test_ec_key_signs_ecdsa(token: Token, new_key: NewKey) -> None:
    ref = new_key(KeySpec.of("ECDSA", 384))
    assert ref is not None
    key = hsm_private_key(token, ref)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key, HsmECPrivateKey)
    assert key.curve.name == "secp384r1" and key.key_size == 384
    public = key.public_key()
    for algorithm in (hashes.SHA256(), hashes.SHA384(), hashes.SHA512()):
        public.verify(key.sign(MESSAGE, ec.ECDSA(algorithm)), MESSAGE, ec.ECDSA(algorithm))
    digest = hashes.Hash(hashes.SHA384())
    digest.update(MESSAGE)
    signature = key.sign(digest.finalize(), ec.ECDSA(utils.Prehashed(hashes.SHA384())))
    public.verify(signature, MESSAGE, ec.ECDSA(hashes.SHA384()))
    with pytest.raises(UnsupportedAlgorithm, match="deterministic"):
        key.sign(MESSAGE, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    with pytest.raises(UnsupportedAlgorithm, match="signing only"):
        key.exchange(ec.ECDH(), ec.generate_private_key(ec.SECP384R1()).public_key())


def test_ed25519_key_signs_the_message_itself(token: Token, new_key: NewKey) -> None:
    ref = new_key(KeySpec.of("Ed25519"))
    if ref is None:
        return
    key = hsm_private_key(token, ref)
    assert isinstance(key, ed25519.Ed25519PrivateKey) and isinstance(key, HsmEd25519PrivateKey)
    key.public_key().verify(key.sign(MESSAGE), MESSAGE)


@pytest.mark.parametrize(
    "spec", [KeySpec.of("ECDSA", 256), KeySpec.of("RSA", 2048), KeySpec.of("Ed25519")], ids=str
)
def test_the_private_key_never_comes_out(token: Token, new_key: NewKey, spec: KeySpec) -> None:
    ref = new_key(spec)
    if ref is None:
        return
    key = hsm_private_key(token, ref)
    with pytest.raises(KeyNotExportableError, match="lives in the HSM"):
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    if isinstance(key, HsmEd25519PrivateKey):
        with pytest.raises(KeyNotExportableError):
            key.private_bytes_raw()
    else:
        with pytest.raises(KeyNotExportableError):
            key.private_numbers()
    assert copy.copy(key) is key and copy.deepcopy(key) is key
    assert key.key_ref.label in repr(key) and "BEGIN" not in repr(key)


def test_a_key_class_needs_its_algorithm(token: Token, new_key: NewKey) -> None:
    ref = new_key(KeySpec.of("ECDSA", 256))
    assert ref is not None
    assert ref.spec.algorithm is KeyAlgorithm.ECDSA
    with pytest.raises(TypeError, match="is for RSA keys, not ECDSA-256"):
        HsmRSAPrivateKey(token, ref)
