"""The parts of the hsm layer that need no module: PINs, key specs, error translation."""

from __future__ import annotations

import pickle

import pkcs11.exceptions as p11e
import pytest

from pkcs11_issuer.hsm import (
    AuthenticationError,
    ConfigurationError,
    HsmUnavailableError,
    KeyAlgorithm,
    KeySpec,
    Pin,
    UnsupportedError,
)
from pkcs11_issuer.hsm.errors import ckr_name, is_dead_module, is_dead_session, translate
from pkcs11_issuer.hsm.signing import Padding, prepare


def test_a_pin_never_prints_or_serialises() -> None:
    pin = Pin("s3cret-pin")
    assert "s3cret" not in repr(pin) and "s3cret" not in str(pin) and "s3cret" not in f"{pin}"
    assert pin.reveal() == b"s3cret-pin"
    with pytest.raises(TypeError):
        pickle.dumps(pin)


def test_pin_file_drops_one_trailing_newline(tmp_path: pytest.TempPathFactory) -> None:
    path = tmp_path / "pin"  # type: ignore[operator]
    path.write_text("1234\n")
    assert Pin.from_file(path) == Pin("1234")
    path.write_text("")
    with pytest.raises(ValueError, match="empty"):
        Pin.from_file(path)


@pytest.mark.parametrize(
    ("algorithm", "size", "expected"),
    [
        ("RSA", None, KeySpec(KeyAlgorithm.RSA, 2048)),
        ("RSA", 4096, KeySpec(KeyAlgorithm.RSA, 4096)),
        ("ECDSA", None, KeySpec(KeyAlgorithm.ECDSA, 256)),
        ("ECDSA", 384, KeySpec(KeyAlgorithm.ECDSA, 384)),
        ("Ed25519", None, KeySpec(KeyAlgorithm.ED25519, 0)),
    ],
)
def test_key_spec_defaults_follow_cert_manager(
    algorithm: str, size: int | None, expected: KeySpec
) -> None:
    assert KeySpec.of(algorithm, size) == expected


@pytest.mark.parametrize(
    ("algorithm", "size", "message"),
    [("RSA", 1024, "not supported"), ("ECDSA", 521, "not supported"), ("DSA", None, "unknown")],
)
def test_key_spec_refuses_what_is_not_offered(
    algorithm: str, size: int | None, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        KeySpec.of(algorithm, size)


@pytest.mark.parametrize(
    ("error", "cls", "ckr"),
    [
        (p11e.PinIncorrect(), AuthenticationError, "CKR_PIN_INCORRECT"),
        (p11e.PinLocked(), AuthenticationError, "CKR_PIN_LOCKED"),
        (p11e.DeviceRemoved(), HsmUnavailableError, "CKR_DEVICE_REMOVED"),
        (p11e.SessionHandleInvalid(), HsmUnavailableError, "CKR_SESSION_HANDLE_INVALID"),
        (p11e.MechanismInvalid(), UnsupportedError, "CKR_MECHANISM_INVALID"),
        (p11e.TokenWriteProtected(), ConfigurationError, "CKR_TOKEN_WRITE_PROTECTED"),
        (p11e.PKCS11Error("Unmapped error code 0x80000001"), HsmUnavailableError, "CKR_0x80000001"),
    ],
)
def test_errors_map_to_what_the_operator_can_act_on(
    error: Exception, cls: type[Exception], ckr: str
) -> None:
    translated = translate(error, "doing something")
    assert type(translated) is cls
    assert translated.ckr == ckr == ckr_name(error)
    assert str(translated).startswith("doing something")


def test_locked_pin_says_so_and_dead_things_are_recognised() -> None:
    locked = translate(p11e.PinLocked(), "login")
    assert isinstance(locked, AuthenticationError) and locked.locked
    assert is_dead_module(p11e.DeviceRemoved())
    assert is_dead_module(p11e.PKCS11Error("Initialisation error (not initialized)."))
    assert is_dead_session(p11e.SessionHandleInvalid())
    assert not is_dead_module(p11e.PinIncorrect()) and not is_dead_session(p11e.PinIncorrect())


def test_rsa_pkcs1_payload_is_digest_info_and_ecdsa_signs_the_bare_digest() -> None:
    rsa = prepare(KeyAlgorithm.RSA, b"abc", hash_name="sha256")
    assert rsa.payload.hex().startswith("3031300d060960864801650304020105000420")
    assert rsa.payload.endswith(
        bytes.fromhex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    )
    ecdsa = prepare(KeyAlgorithm.ECDSA, b"abc", hash_name="sha256")
    assert ecdsa.payload == rsa.payload[-32:] and ecdsa.parameter is None
    pss = prepare(KeyAlgorithm.RSA, b"abc", hash_name="sha384", padding=Padding.PSS)
    assert len(pss.payload) == 48 and pss.parameter is not None and pss.parameter[2] == 48
    with pytest.raises(UnsupportedError, match="sha1"):
        prepare(KeyAlgorithm.ECDSA, b"abc", hash_name="sha1")
    with pytest.raises(UnsupportedError, match="Ed25519"):
        prepare(KeyAlgorithm.ED25519, b"abc", hash_name="sha256")
