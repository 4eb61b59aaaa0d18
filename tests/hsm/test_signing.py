"""Keys generated in the token sign with the portable mechanisms; `cryptography` verifies."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from pkcs11_issuer.hsm import MECHANISMS_NEEDED, KeyAlgorithm, KeySpec, Padding, Token
from pkcs11_issuer.hsm.errors import UnsupportedError

MESSAGE = b"to be signed inside the HSM"

SPECS = [
    KeySpec.of("ECDSA", 256),
    KeySpec.of("ECDSA", 384),
    KeySpec.of("RSA", 2048),
    KeySpec.of("Ed25519"),
]


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_generated_key_signs_and_verifies(
    token: Token, key_name: tuple[bytes, str], spec: KeySpec
) -> None:
    key_id, label = key_name
    if not set(MECHANISMS_NEEDED[spec.algorithm]) <= token.mechanisms():
        # p11-kit 0.24's RPC does not carry the EdDSA mechanisms: a clear refusal, no key.
        with pytest.raises(UnsupportedError, match="CKR_MECHANISM_INVALID"):
            token.generate_key(spec, id=key_id, label=label)
        assert token.delete_key(id=key_id) == 0
        return
    key = token.generate_key(spec, id=key_id, label=label)
    try:
        public = key.public_key
        if spec.algorithm is KeyAlgorithm.ED25519:
            assert isinstance(public, ed25519.Ed25519PublicKey)
            public.verify(token.sign(key, MESSAGE, hash_name=None), MESSAGE)
        elif spec.algorithm is KeyAlgorithm.ECDSA:
            assert isinstance(public, ec.EllipticCurvePublicKey)
            for name, algorithm in (("sha256", hashes.SHA256()), ("sha384", hashes.SHA384())):
                signature = token.sign(key, MESSAGE, hash_name=name)
                public.verify(signature, MESSAGE, ec.ECDSA(algorithm))
        else:
            assert isinstance(public, rsa.RSAPublicKey)
            signature = token.sign(key, MESSAGE, hash_name="sha256")
            public.verify(signature, MESSAGE, padding.PKCS1v15(), hashes.SHA256())
            signature = token.sign(key, MESSAGE, hash_name="sha512", padding=Padding.PSS)
            pss = padding.PSS(padding.MGF1(hashes.SHA512()), 64)
            public.verify(signature, MESSAGE, pss, hashes.SHA512())
    finally:
        token.delete_key(id=key_id)
