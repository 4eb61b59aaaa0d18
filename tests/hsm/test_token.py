"""Keys, sessions, login and recovery on real SoftHSM tokens (directly and via p11-kit)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from pkcs11 import Attribute, ObjectClass

from pkcs11_issuer.dev.p11kit import P11KitServer
from pkcs11_issuer.dev.softhsm import softhsm_module
from pkcs11_issuer.hsm import (
    AuthenticationError,
    ConfigurationError,
    HsmError,
    HsmUnavailableError,
    KeyExistsError,
    KeyNotFoundError,
    KeySpec,
    ModuleAllowlist,
    Pin,
    Token,
    TokenNotFoundError,
    TokenSelector,
)
from support.hsm_fixtures import DIRECT_LABEL, GUARD_LABEL, SIDECAR_LABEL, TEST_PIN
from support.tools import need_file

P256 = KeySpec.of("ECDSA", 256)


@dataclass
class Recorder:
    """A `TokenObserver` that keeps what it hears; calls come from any thread."""

    calls: list[tuple[str, str, float, HsmError | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def hsm_call(self, token: str, action: str, seconds: float, error: HsmError | None) -> None:
        with self.lock:
            self.calls.append((token, action, seconds, error))


@pytest.fixture
def observed(token: Token) -> Iterator[tuple[Token, Recorder]]:
    """A second `Token` on the fixture's token, with a recording observer. The fixture's own
    pooled sessions stay open, so closing this one never logs the token out."""
    recorder = Recorder()
    other = Token(token.module, token.selector, Pin(TEST_PIN), observer=recorder, name="observed")
    yield other, recorder
    other.close()


def test_generated_key_is_sensitive_non_extractable_signing_only(
    token: Token, key_name: tuple[bytes, str]
) -> None:
    key_id, label = key_name
    key = token.generate_key(P256, id=key_id, label=label)
    try:
        attributes = token.key_attributes(key)
        assert attributes == {
            "token": True,
            "private": True,
            "sensitive": True,
            "extractable": False,
            "always_sensitive": True,
            "never_extractable": True,
            "sign": True,
            "decrypt": False,
        }
    finally:
        token.delete_key(id=key_id)


def test_never_a_second_key_with_the_same_id_or_label(
    token: Token, key_name: tuple[bytes, str]
) -> None:
    key_id, label = key_name
    token.generate_key(P256, id=key_id, label=label)
    try:
        with pytest.raises(KeyExistsError, match="already holds"):
            token.generate_key(P256, id=key_id, label=label + "-other")
        with pytest.raises(KeyExistsError, match="already holds"):
            token.generate_key(P256, id=key_id + b"-other", label=label)
        assert [k for k in token.list_keys() if k.id == key_id or k.label == label] != []
        assert len([k for k in token.list_keys() if k.id == key_id or k.label == label]) == 1
    finally:
        token.delete_key(id=key_id)


def test_lookup_by_id_label_or_both_and_delete(token: Token, key_name: tuple[bytes, str]) -> None:
    key_id, label = key_name
    generated = token.generate_key(P256, id=key_id, label=label)
    for found in (
        token.find_key(id=key_id),
        token.find_key(label=label),
        token.find_key(id=key_id, label=label),
    ):
        assert found == generated
        assert found.public_key == generated.public_key
    with pytest.raises(KeyNotFoundError):
        token.find_key(id=key_id, label=label + "-nope")
    assert token.delete_key(id=key_id, label=label) == 2  # the private and the public object
    with pytest.raises(KeyNotFoundError, match="no private key"):
        token.find_key(id=key_id)


def test_an_ec_key_missing_its_public_half_does_not_hide_the_others(
    token: Token, key_name: tuple[bytes, str]
) -> None:
    """What SoftHSM leaves when a process is killed inside C_GenerateKeyPair."""
    key_id, label = key_name
    spec = KeySpec.of("ECDSA", 256)
    token.generate_key(spec, id=key_id, label=label)
    whole = token.generate_key(spec, id=key_id + b"-2", label=label + "-2")
    token.call(
        "delete",
        "destroying a public half",
        lambda s: [
            o.destroy()
            for o in s._objects({Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.ID: key_id})
        ],
    )
    try:
        listed = {key.id for key in token.list_keys()}
        assert whole.id in listed
        assert key_id not in listed
    finally:
        token.delete_key(id=key_id)
        token.delete_key(id=whole.id)


def test_key_uri_names_token_and_key_without_pin(token: Token, key_name: tuple[bytes, str]) -> None:
    key_id, label = key_name
    key = token.generate_key(P256, id=key_id, label=label)
    try:
        uri = token.key_uri(key)
        assert uri.id == key_id and uri.object == label and uri.type == "private"
        assert uri.token == token.info.label and uri.serial == token.info.serial
        assert uri.pin_value is None and uri.pin_source is None
    finally:
        token.delete_key(id=key_id)


def test_certificate_objects_are_stored_and_read(token: Token, key_name: tuple[bytes, str]) -> None:
    key_id, label = key_name
    der = bytes.fromhex("3003020101")  # any bytes: the token stores them as CKA_VALUE
    token.store_certificate(der, id=key_id, label=label, subject=bytes.fromhex("3000"))
    try:
        [stored] = token.find_certificates(id=key_id)
        assert (stored.id, stored.label, stored.der) == (key_id, label, der)
    finally:
        assert token.delete_certificates(id=key_id) == 1


def test_concurrent_generation_and_signing_is_safe(token: Token) -> None:
    """Many threads generate and sign at once; every signature verifies and nothing crashes."""
    threads, rounds, signatures = 8, 3, 25
    failures: list[BaseException] = []
    prefix = f"stress-{token.module.name}-".encode()

    def worker(index: int) -> None:
        try:
            for round_ in range(rounds):
                key_id = prefix + f"{index}-{round_}".encode()
                key = token.generate_key(P256, id=key_id, label=key_id.decode())
                public = key.public_key
                assert isinstance(public, ec.EllipticCurvePublicKey)
                for n in range(signatures):
                    message = key_id + str(n).encode()
                    signature = token.sign(key, message, hash_name="sha256")
                    public.verify(signature, message, ec.ECDSA(hashes.SHA256()))
                assert token.delete_key(id=key_id) == 2
        except BaseException as error:  # collected and re-raised by the test thread
            failures.append(error)

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    assert failures == []
    assert not [k for k in token.list_keys() if k.id.startswith(prefix)]
    assert token.sessions_open <= 8


def test_searches_during_generation_never_break_it_or_leave_half_made_keys(token: Token) -> None:
    """SoftHSM re-reads an object that a C_FindObjects walk meets while another thread is
    still creating it; unguarded, some generations fail (CKR_TEMPLATE_INCONSISTENT or
    CKR_GENERAL_ERROR) and half-made objects stay on the token."""
    prefix = f"searched-{token.module.name}-".encode()
    anchor = token.generate_key(P256, id=prefix + b"anchor", label=(prefix + b"anchor").decode())
    generated: list[bytes] = []
    failures: list[BaseException] = []
    done = threading.Event()

    def generate() -> None:
        try:
            for n in range(60):
                key_id = prefix + str(n).encode()
                token.generate_key(P256, id=key_id, label=key_id.decode(), check_unique=False)
                generated.append(key_id)
        except BaseException as error:  # collected and re-raised by the test thread
            failures.append(error)
        finally:
            done.set()

    def search() -> None:
        try:
            while not done.is_set():
                assert token.find_key(label=anchor.label) == anchor
        except BaseException as error:
            failures.append(error)

    workers = [threading.Thread(target=generate)]
    workers += [threading.Thread(target=search) for _ in range(2)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    assert failures == []
    mine = {key.id for key in token.list_keys() if key.id.startswith(prefix)}
    assert mine == {anchor.id, *generated}
    for key_id in mine:
        assert token.delete_key(id=key_id) == 2


def test_observer_hears_each_call_with_its_kind_duration_and_error(
    token: Token, observed: tuple[Token, Recorder], key_name: tuple[bytes, str]
) -> None:
    other, recorder = observed
    key_id, label = key_name
    key = token.generate_key(P256, id=key_id, label=label)
    try:
        other.sign(key, b"observed", hash_name="sha256")
        with pytest.raises(KeyNotFoundError) as missing:
            other.find_key(id=key_id + b"-missing")
    finally:
        token.delete_key(id=key_id)
    assert [(name, action, error) for name, action, _seconds, error in recorder.calls] == [
        ("observed", "sign", None),
        ("observed", "find", missing.value),
    ]
    assert all(seconds > 0 for _name, _action, seconds, _error in recorder.calls)


def test_sessions_in_use_counts_borrowed_sessions(observed: tuple[Token, Recorder]) -> None:
    other, recorder = observed
    borrowed, release = threading.Event(), threading.Event()

    def hold(_session: object) -> None:
        borrowed.set()
        release.wait(10)

    holder = threading.Thread(target=other.call, args=("list", "holding a session", hold))
    holder.start()
    try:
        assert borrowed.wait(10)
        assert (other.sessions_open, other.sessions_in_use) == (1, 1)
    finally:
        release.set()
        holder.join()
    assert (other.sessions_open, other.sessions_in_use) == (1, 0)
    assert [action for _name, action, _seconds, _error in recorder.calls] == ["list"]


def test_failing_observer_never_fails_the_call(
    token: Token, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        def hsm_call(self, token: str, action: str, seconds: float, error: object) -> None:
            raise RuntimeError("metrics are down")

    other = Token(token.module, token.selector, Pin(TEST_PIN), observer=Broken())
    try:
        with caplog.at_level(logging.DEBUG, logger="pkcs11_issuer.hsm.token"):
            other.list_keys()
            other.list_keys()
        assert [r.message for r in caplog.records if r.exc_info] == [
            "token observer failed; further failures go unlogged"
        ]
    finally:
        other.close()


def test_module_not_on_the_allowlist_is_refused(softhsm: object) -> None:
    allowlist = ModuleAllowlist({"softhsm": need_file(softhsm_module() or "", "SoftHSM2")})
    with pytest.raises(ConfigurationError, match="not in the operator's module allowlist"):
        allowlist.load("luna")
    with pytest.raises(ConfigurationError, match="not in the operator's module allowlist"):
        allowlist.name_for_path("/tmp/evil.so")
    assert allowlist.name_for_path(softhsm_module() or "") == "softhsm"
    with pytest.raises(ConfigurationError, match="must be absolute"):
        ModuleAllowlist({"relative": "lib/libsofthsm2.so"})
    with pytest.raises(ConfigurationError, match="does not exist"):
        ModuleAllowlist({"gone": "/nonexistent/libpkcs11.so"}).load("gone")


def test_unknown_token_names_the_candidates(modules: ModuleAllowlist) -> None:
    with pytest.raises(TokenNotFoundError, match=f"label='{DIRECT_LABEL}'"):
        Token(modules.load("softhsm"), TokenSelector(label="no-such-token"), Pin(TEST_PIN))


def test_wrong_pin_is_tried_once_per_interval(
    softhsm: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counted with OpenSC's pkcs11-spy, which logs every call that reaches the module."""
    spy = need_file(
        "/usr/lib/x86_64-linux-gnu/pkcs11/pkcs11-spy.so", "pkcs11-spy", "apt-get install opensc"
    )
    log = tmp_path / "spy.log"
    monkeypatch.setenv("PKCS11SPY", softhsm_module() or "")
    monkeypatch.setenv("PKCS11SPY_OUTPUT", str(log))
    module = ModuleAllowlist({"spy": spy}).load("spy")
    wrong = Token(module, TokenSelector(label=GUARD_LABEL), Pin("not-the-pin"))
    for _ in range(5):
        with pytest.raises(AuthenticationError, match="CKR_PIN_INCORRECT") as caught:
            wrong.list_keys()
        assert "not-the-pin" not in str(caught.value)
    assert log.read_text().count("C_Login") == 1
    wrong.set_pin(Pin(TEST_PIN))  # the Secret changed: one new attempt, which succeeds
    assert wrong.list_keys() == []
    assert log.read_text().count("C_Login") == 2
    wrong.close()


def test_hsm_down_then_back_recovers_by_itself(
    modules: ModuleAllowlist, p11kit_server: P11KitServer, key_name: tuple[bytes, str]
) -> None:
    """The sidecar's p11-kit server goes away under a live Token and comes back."""
    recorder = Recorder()
    token = Token(
        modules.load("p11kit"),
        TokenSelector(label=SIDECAR_LABEL),
        Pin(TEST_PIN),
        observer=recorder,
    )
    key_id, label = key_name
    key = token.generate_key(P256, id=key_id, label=label)
    try:
        token.sign(key, b"before", hash_name="sha256")
        p11kit_server.stop()
        try:
            for _ in range(3):  # as the operator's backoff would retry
                with pytest.raises(HsmUnavailableError, match="retried with backoff"):
                    token.sign(key, b"while down", hash_name="sha256")
        finally:
            p11kit_server.start()
        # Once per call, however many attempts recovery made inside it.
        failed = [error for _name, _action, _seconds, error in recorder.calls[2:]]
        assert len(failed) == 3
        assert all(isinstance(error, HsmUnavailableError) for error in failed)
        assert {name for name, _action, _seconds, _error in recorder.calls} == {SIDECAR_LABEL}
        public = key.public_key
        assert isinstance(public, ec.EllipticCurvePublicKey)
        signature = token.sign(key, b"after", hash_name="sha256")
        public.verify(signature, b"after", ec.ECDSA(hashes.SHA256()))
    finally:
        token.delete_key(id=key_id)
        token.close()
