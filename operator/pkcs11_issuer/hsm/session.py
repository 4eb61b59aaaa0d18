"""Operations inside one logged-in PKCS#11 session: keys, signatures, certificate objects.

A `TokenSession` is only ever used by one thread at a time (the pool in `token.py` hands it
out); it keeps the private-key objects it has found, so signing with a known key costs one
C_SignInit + C_Sign and no C_FindObjects.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import pkcs11
from pkcs11 import Attribute, KeyType, ObjectClass

from pkcs11_issuer.hsm.errors import (
    ConfigurationError,
    KeyExistsError,
    KeyNotFoundError,
    UnsupportedError,
)
from pkcs11_issuer.hsm.keys import (
    KeyAlgorithm,
    KeySpec,
    PublicKey,
    algorithm_of,
    ec_public_key,
    rsa_public_key,
)
from pkcs11_issuer.hsm.module import NativeCalls, encode_bool, encode_ulong
from pkcs11_issuer.hsm.signing import SignRequest
from pkcs11_issuer.hsm.store_lock import ObjectStoreLock

_GENERATE = {
    KeyAlgorithm.RSA: pkcs11.Mechanism.RSA_PKCS_KEY_PAIR_GEN,
    KeyAlgorithm.ECDSA: pkcs11.Mechanism.EC_KEY_PAIR_GEN,
    KeyAlgorithm.ED25519: pkcs11.Mechanism.EC_EDWARDS_KEY_PAIR_GEN,
}


def _handle(obj: pkcs11.Object) -> int:
    handle = obj.handle
    assert handle is not None  # python-pkcs11 hands out only objects it holds a handle of
    return handle


def _true(attribute: Attribute) -> tuple[int, bytes]:
    return attribute, encode_bool(True)


def _false(attribute: Attribute) -> tuple[int, bytes]:
    return attribute, encode_bool(False)


_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeyRef:
    """A key pair on a token, named by CKA_ID and CKA_LABEL. Holds no handle: handles die
    with sessions and module re-initialisation, ids and labels do not."""

    id: bytes
    label: str
    spec: KeySpec
    public_key: PublicKey = field(compare=False, repr=False)


@dataclass(frozen=True)
class CertificateObject:
    id: bytes
    label: str
    der: bytes


def _selector(id: bytes | None, label: str | None) -> dict[Attribute, Any]:
    if id is None and label is None:
        raise ConfigurationError("a key is named by its id, its label (object), or both")
    attrs: dict[Attribute, Any] = {}
    if id is not None:
        attrs[Attribute.ID] = id
    if label is not None:
        attrs[Attribute.LABEL] = label
    return attrs


def _describe(id: bytes | None, label: str | None) -> str:
    parts = []
    if id is not None:
        parts.append(f"id={id.hex()}")
    if label is not None:
        parts.append(f"label={label!r}")
    return " ".join(parts)


class TokenSession:
    def __init__(
        self,
        session: pkcs11.Session,
        generation: int,
        native: NativeCalls,
        store_lock: ObjectStoreLock,
    ) -> None:
        self.session = session
        self.generation = generation
        self._native = native
        self._store_lock = store_lock
        # Private-key object handles by (id, label): valid as long as this session is.
        self._private_keys: dict[tuple[bytes, str], int] = {}

    @property
    def handle(self) -> int:
        handle: int = self.session.handle  # type: ignore[attr-defined]  # not in the stubs
        return handle

    def holds(self, key: tuple[bytes, str]) -> bool:
        return key in self._private_keys

    def close(self) -> None:
        self._private_keys.clear()
        self.session.close()

    # -- keys -------------------------------------------------------------------------------

    def _objects(self, attrs: dict[Attribute, Any]) -> list[pkcs11.Object]:
        with self._store_lock.searching():
            return list(self.session.get_objects(attrs))

    def _one_private_key(self, id: bytes | None, label: str | None) -> pkcs11.PrivateKey:
        found = self._objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY, **_selector(id, label)})
        if not found:
            raise KeyNotFoundError(
                f"no private key with {_describe(id, label)} on the token",
                hint="check the key URI's id/object, or generate the key first",
            )
        if len(found) > 1:
            raise ConfigurationError(
                f"{len(found)} private keys match {_describe(id, label)}; name the key by "
                "both id and object so that exactly one matches"
            )
        key = found[0]
        assert isinstance(key, pkcs11.PrivateKey)
        return key

    def _public_key_of(self, private: pkcs11.PrivateKey) -> PublicKey:
        key_id = private[Attribute.ID]
        key_type = private[Attribute.KEY_TYPE]
        if key_type == KeyType.RSA:
            return rsa_public_key(private[Attribute.MODULUS], private[Attribute.PUBLIC_EXPONENT])
        # The private object of an EC key has no CKA_EC_POINT: read the public object.
        publics = self._objects({Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.ID: key_id})
        if len(publics) != 1:
            raise KeyNotFoundError(
                f"the public half of EC key id={bytes(key_id).hex()} is "
                f"{'missing' if not publics else 'ambiguous'} on the token"
            )
        public = publics[0]
        return ec_public_key(public[Attribute.EC_PARAMS], public[Attribute.EC_POINT])

    def _ref(self, private: pkcs11.PrivateKey) -> KeyRef:
        public_key = self._public_key_of(private)
        ref = KeyRef(
            id=bytes(private[Attribute.ID]),
            label=str(private[Attribute.LABEL]),
            spec=algorithm_of(public_key),
            public_key=public_key,
        )
        self._private_keys[(ref.id, ref.label)] = _handle(private)
        return ref

    def find_key(self, *, id: bytes | None = None, label: str | None = None) -> KeyRef:
        return self._ref(self._one_private_key(id, label))

    def list_keys(self) -> list[KeyRef]:
        """The usable key pairs. A private object without its public half or curve is left
        out: SoftHSM leaves such a half-made object behind when a process is killed in the
        middle of C_GenerateKeyPair, and one of those must not hide every other key."""
        keys = []
        for key in self._objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY}):
            if not isinstance(key, pkcs11.PrivateKey):
                continue
            try:
                keys.append(self._ref(key))
            except (KeyNotFoundError, UnsupportedError) as error:
                _log.warning("skipping an incomplete key object: %s", error)
        return keys

    def generate_key(
        self, spec: KeySpec, *, id: bytes, label: str, check_unique: bool = True
    ) -> KeyRef:
        """Generate a signing-only, non-extractable key pair under exactly this id and label.

        Refuses when any object already has the id or the label, so a retried request can
        never leave two keys behind (callers hold the token's lock for this id meanwhile)."""
        if not id or not label:
            raise ConfigurationError("a generated key needs both an id and a label")
        for attrs in ({Attribute.ID: id}, {Attribute.LABEL: label}) if check_unique else ():
            if self._objects(attrs):
                raise KeyExistsError(
                    f"the token already holds an object with {_describe(*_split(attrs))}",
                    hint="adopt the existing key by naming it, or choose another id and label",
                )
        # What python-pkcs11 would send for a sign-only pair, made here in one call: its own
        # generate_keypair reads four attributes of both new objects before returning.
        common = [(Attribute.ID, id), (Attribute.LABEL, label.encode()), _true(Attribute.TOKEN)]
        public = [
            (Attribute.CLASS, encode_ulong(ObjectClass.PUBLIC_KEY)),
            *common,
            _true(Attribute.VERIFY),
            _false(Attribute.ENCRYPT),
            _false(Attribute.WRAP),
        ]
        private = [
            (Attribute.CLASS, encode_ulong(ObjectClass.PRIVATE_KEY)),
            *common,
            _true(Attribute.PRIVATE),
            _true(Attribute.SENSITIVE),
            _false(Attribute.EXTRACTABLE),
            _true(Attribute.SIGN),
            _false(Attribute.DECRYPT),
            _false(Attribute.UNWRAP),
            _false(Attribute.DERIVE),
        ]
        if spec.algorithm is KeyAlgorithm.RSA:
            public += [
                (Attribute.MODULUS_BITS, encode_ulong(spec.size)),
                (Attribute.PUBLIC_EXPONENT, b"\x01\x00\x01"),
            ]
        else:
            public.append((Attribute.EC_PARAMS, spec.ec_params))
        public_handle, private_handle = self._native.generate_key_pair(
            self.handle, _GENERATE[spec.algorithm], public, private
        )
        # One C_GetAttributeValue for what is needed. The curve is the one just asked for:
        # reading CKA_EC_PARAMS back could only repeat it.
        if spec.algorithm is KeyAlgorithm.RSA:
            modulus, exponent = self._native.attributes(
                self.handle,
                public_handle,
                [(Attribute.MODULUS, spec.signature_size), (Attribute.PUBLIC_EXPONENT, 16)],
            )
            public_key: PublicKey = rsa_public_key(modulus, exponent)
        else:
            # A point fits in a signature's length plus its DER wrapping; a module that
            # encodes it longer is read again the two-call way.
            (point,) = self._native.attributes(
                self.handle, public_handle, [(Attribute.EC_POINT, spec.signature_size + 8)]
            )
            public_key = ec_public_key(spec.ec_params, point)
        self._private_keys[(id, label)] = private_handle
        return KeyRef(id=id, label=label, spec=spec, public_key=public_key)

    def delete_key(self, *, id: bytes | None = None, label: str | None = None) -> int:
        """Destroy the private and public objects that match; returns how many were destroyed."""
        selector = _selector(id, label)
        destroyed = 0
        for object_class in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY):
            for obj in self._objects({Attribute.CLASS: object_class, **selector}):
                obj.destroy()
                destroyed += 1
        self._private_keys = {
            k: v
            for k, v in self._private_keys.items()
            if not ((id is None or k[0] == id) and (label is None or k[1] == label))
        }
        return destroyed

    def private_key_attributes(self, key: KeyRef) -> dict[str, bool]:
        """The protection flags of a key, as the tests and `hsm check` report them."""
        private = self._one_private_key(key.id, key.label)
        return {
            name: bool(private[attr])
            for name, attr in (
                ("token", Attribute.TOKEN),
                ("private", Attribute.PRIVATE),
                ("sensitive", Attribute.SENSITIVE),
                ("extractable", Attribute.EXTRACTABLE),
                ("always_sensitive", Attribute.ALWAYS_SENSITIVE),
                ("never_extractable", Attribute.NEVER_EXTRACTABLE),
                ("sign", Attribute.SIGN),
                ("decrypt", Attribute.DECRYPT),
            )
        }

    # -- signing ----------------------------------------------------------------------------

    def sign(self, key: KeyRef, request: SignRequest) -> bytes:
        handle = self._private_keys.get((key.id, key.label))
        if handle is None:
            handle = _handle(self._one_private_key(key.id, key.label))
            self._private_keys[(key.id, key.label)] = handle
        return self._native.sign(
            self.handle,
            handle,
            mechanism=request.mechanism,
            pss=request.parameter,
            payload=request.payload,
            expected_length=key.spec.signature_size,
        )

    # -- certificate objects ---------------------------------------------------------------

    def store_certificate(self, der: bytes, *, id: bytes, label: str, subject: bytes) -> None:
        self.session.create_object(
            {
                Attribute.CLASS: ObjectClass.CERTIFICATE,
                Attribute.CERTIFICATE_TYPE: pkcs11.CertificateType.X_509,
                Attribute.TOKEN: True,
                Attribute.PRIVATE: False,
                Attribute.ID: id,
                Attribute.LABEL: label,
                Attribute.SUBJECT: subject,
                Attribute.VALUE: der,
            }
        )

    def find_certificates(
        self, *, id: bytes | None = None, label: str | None = None
    ) -> list[CertificateObject]:
        attrs: dict[Attribute, Any] = {Attribute.CLASS: ObjectClass.CERTIFICATE}
        if id is not None or label is not None:
            attrs.update(_selector(id, label))
        return [
            CertificateObject(
                bytes(obj[Attribute.ID]), str(obj[Attribute.LABEL]), bytes(obj[Attribute.VALUE])
            )
            for obj in self._objects(attrs)
        ]

    def delete_certificates(self, *, id: bytes | None = None, label: str | None = None) -> int:
        found = self._objects({Attribute.CLASS: ObjectClass.CERTIFICATE, **_selector(id, label)})
        for obj in found:
            obj.destroy()
        return len(found)


def _split(attrs: dict[Attribute, Any]) -> tuple[bytes | None, str | None]:
    return attrs.get(Attribute.ID), attrs.get(Attribute.LABEL)
