"""One token: finding it by URI attributes, a bounded pool of logged-in sessions, a guard
against repeated failed logins, and recovery from dead sessions and devices."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

import pkcs11
import pkcs11.exceptions as p11e

from pkcs11_issuer.hsm import signing
from pkcs11_issuer.hsm.errors import (
    AuthenticationError,
    ConfigurationError,
    HsmError,
    HsmUnavailableError,
    TokenNotFoundError,
    is_dead_module,
    is_dead_session,
    pkcs11_error,
    translate,
)
from pkcs11_issuer.hsm.keys import KeySpec
from pkcs11_issuer.hsm.module import Module
from pkcs11_issuer.hsm.pin import Pin
from pkcs11_issuer.hsm.session import CertificateObject, KeyRef, TokenSession
from pkcs11_issuer.hsm.signing import Padding
from pkcs11_issuer.hsm.store_lock import ObjectStoreLock
from pkcs11_issuer.uri import Pkcs11Uri

T = TypeVar("T")

_log = logging.getLogger(__name__)

# What a `Token.call` does, as a metric label: a handful of values however many keys and
# labels there are (the action text, which names the key, would be one series per key).
CallKind = Literal["sign", "generate", "find", "list", "delete", "attributes", "store", "read"]

CKR_USER_ALREADY_LOGGED_IN = 0x100


class _TokenVanishedError(HsmUnavailableError):
    pass


class TokenObserver(Protocol):
    """Told about every `Token.call` when it completes, successfully or with an `HsmError`:
    the token's `name`, the call's kind, the seconds it took (session wait, login and any
    recovery attempt included) and the error, if any; a call ending in any other exception is
    a bug and goes unreported. Called on the calling thread, so it must be quick and
    thread-safe."""

    def hsm_call(self, token: str, action: str, seconds: float, error: HsmError | None) -> None: ...


@dataclass(frozen=True)
class TokenSelector:
    """The token attributes of a `pkcs11:` URI; unset fields match anything."""

    label: str | None = None
    serial: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    slot_id: int | None = None
    slot_description: str | None = None
    slot_manufacturer: str | None = None

    @classmethod
    def from_uri(cls, uri: Pkcs11Uri) -> TokenSelector:
        return cls(
            label=uri.token,
            serial=uri.serial,
            manufacturer=uri.manufacturer,
            model=uri.model,
            slot_id=uri.slot_id,
            slot_description=uri.slot_description,
            slot_manufacturer=uri.slot_manufacturer,
        )

    def matches(self, slot: pkcs11.Slot, token: pkcs11.Token) -> bool:
        wanted = (
            (self.label, token.label),
            (self.serial, _text(token.serial)),
            (self.manufacturer, token.manufacturer_id),
            (self.model, token.model),
            (self.slot_description, slot.slot_description),
            (self.slot_manufacturer, slot.manufacturer_id),
        )
        if any(want is not None and want != have for want, have in wanted):
            return False
        return self.slot_id is None or self.slot_id == slot.slot_id

    def __str__(self) -> str:
        fields = [f"{name}={value!r}" for name, value in vars(self).items() if value is not None]
        return ", ".join(fields) or "any token"


@dataclass(frozen=True)
class TokenInfo:
    label: str
    serial: str
    manufacturer: str
    model: str
    slot_id: int
    slot_description: str


def _text(value: bytes | str) -> str:
    return value.decode("ascii", "replace").strip() if isinstance(value, bytes) else value.strip()


def _info(slot: pkcs11.Slot, token: pkcs11.Token) -> TokenInfo:
    return TokenInfo(
        label=token.label.strip(),
        serial=_text(token.serial),
        manufacturer=token.manufacturer_id.strip(),
        model=token.model.strip(),
        slot_id=int(slot.slot_id),
        slot_description=slot.slot_description.strip(),
    )


def list_tokens(module: Module) -> list[TokenInfo]:
    try:
        return [_info(slot, slot.get_token()) for slot in module.slots()]
    except pkcs11.PKCS11Error as error:
        raise translate(error, f"listing the tokens of module {module.name!r}") from error


def find_token(module: Module, selector: TokenSelector) -> tuple[pkcs11.Slot, pkcs11.Token]:
    """The one token that matches, or an error that names the candidates. PKCS#11 failures
    are raised as they are, so that `Token.call` can recover from a dead module."""
    present = [(slot, slot.get_token()) for slot in module.slots()]
    matching = [(s, t) for s, t in present if selector.matches(s, t)]
    if len(matching) == 1:
        return matching[0]
    candidates = (
        "; ".join(
            f"label={t.label.strip()!r} serial={_text(t.serial)!r} slot-id={s.slot_id}"
            for s, t in (matching or present)
        )
        or "none"
    )
    if not matching:
        raise TokenNotFoundError(
            f"no token in module {module.name!r} matches {selector} (tokens present: {candidates})"
        )
    raise ConfigurationError(
        f"{len(matching)} tokens in module {module.name!r} match {selector} ({candidates}); "
        "add serial or slot-id to the URI so that one matches"
    )


class Token:
    """A token reached through an allowlisted module, with its own session pool.

    Thread-safe: any number of threads may call its methods; each call borrows one session
    from the pool, and at most `max_sessions` are open at once."""

    def __init__(
        self,
        module: Module,
        selector: TokenSelector,
        pin: Pin | None,
        *,
        max_sessions: int = 8,
        login_retry_interval: float = 300.0,
        acquire_timeout: float = 30.0,
        observer: TokenObserver | None = None,
        name: str | None = None,
    ) -> None:
        if max_sessions < 1:
            raise ConfigurationError("max_sessions must be at least 1")
        self.module = module
        self.selector = selector
        self.login_retry_interval = login_retry_interval
        self.acquire_timeout = acquire_timeout
        self._pin = pin
        self._max_sessions = max_sessions
        self._cond = threading.Condition()
        self._idle: list[TokenSession] = []
        self._open = 0
        self._bound: tuple[int, pkcs11.Slot, pkcs11.Token] | None = None
        self._logged_in_generation = -1
        self._login_lock = threading.Lock()
        self._last_login_failure: tuple[float, AuthenticationError] | None = None
        # Object writes (generate, create, destroy) go one at a time and never during a
        # search (store_lock.py says why SoftHSM needs that); it also makes "is this id or
        # label taken?" and "create it" one atomic step.
        self._store_lock = ObjectStoreLock()
        self._observer = observer
        self._observer_failed = False
        try:
            self.info = _info(*self._slot_and_token()[:2])
        except pkcs11.PKCS11Error as error:
            raise translate(error, f"opening token {selector}") from error
        # What the observer is told: the operator's own name for the token when it has one,
        # so metrics and recovery signals match its configuration rather than the HSM.
        self.name = name if name is not None else self.info.label

    # -- pool -------------------------------------------------------------------------------

    @property
    def sessions_open(self) -> int:
        return self._open

    @property
    def sessions_in_use(self) -> int:
        """Sessions borrowed by calls right now (including ones still being opened)."""
        with self._cond:
            return self._open - len(self._idle)

    def set_pin(self, pin: Pin | None) -> None:
        """A new PIN (the Secret changed): the failed-login guard starts over."""
        with self._login_lock:
            if pin != self._pin:
                self._pin = pin
                self._last_login_failure = None

    def _slot_and_token(self) -> tuple[pkcs11.Slot, pkcs11.Token, int]:
        generation = self.module.generation
        bound = self._bound
        if bound is None or bound[0] != generation:
            try:
                slot, token = find_token(self.module, self.selector)
            except TokenNotFoundError as error:
                if not self.module.recovering:
                    raise
                # A module re-initialised while its device was away (a p11-kit server that
                # stopped, a CloudHSM client that lost its cluster) lists no tokens until it
                # is initialised again once the device is back.
                raise _TokenVanishedError(
                    f"token {self.selector} is not visible since the HSM connection was lost",
                    hint="transient; it is retried with backoff",
                ) from error
            self._bound = bound = (generation, slot, token)
        return bound[1], bound[2], generation

    def _login(self, session: TokenSession) -> None:
        with self._login_lock:
            if self._logged_in_generation == session.generation:
                return
            if self._pin is None:
                raise ConfigurationError(f"token {self.info.label!r} needs a PIN and has none")
            failure = self._last_login_failure
            if failure is not None and time.monotonic() - failure[0] < self.login_retry_interval:
                raise failure[1]
            rv = self.module.login(session.handle, self._pin.reveal())
            if rv in (0, CKR_USER_ALREADY_LOGGED_IN):
                self._logged_in_generation = session.generation
                self._last_login_failure = None
                return
            raw = pkcs11_error(rv)
            error = translate(raw, f"logging in to token {self.info.label!r}")
            if not isinstance(error, AuthenticationError):
                raise raw  # a dead session or device: `call` recovers from those
            self._last_login_failure = (time.monotonic(), error)
            raise error

    def _open_session(self) -> TokenSession:
        _slot, token, generation = self._slot_and_token()
        with self.module.lock:
            # Always read-write (AWS CloudHSM refuses key generation otherwise) and never with
            # python-pkcs11's own login: its sessions log the whole token out when they close.
            session = TokenSession(
                token.open(rw=True), generation, self.module.native, self._store_lock
            )
        try:
            self._login(session)
        except BaseException:
            self._close_quietly(session)
            raise
        return session

    def _close_quietly(self, session: TokenSession) -> None:
        if session.generation != self.module.generation:
            return  # its handle died with the old module state
        try:
            with self.module.lock:
                session.close()
        except pkcs11.PKCS11Error:
            pass  # already gone; the pool forgets it either way

    def _acquire(self, prefer: tuple[bytes, str] | None = None) -> TokenSession:
        deadline = time.monotonic() + self.acquire_timeout
        with self._cond:
            while True:
                if prefer is not None:
                    # A session that already holds this key's object signs without a
                    # C_FindObjects, which costs O(objects on the token) on SoftHSM.
                    for index, session in enumerate(self._idle):
                        if session.holds(prefer) and session.generation == self.module.generation:
                            return self._idle.pop(index)
                while self._idle:
                    session = self._idle.pop()
                    if session.generation == self.module.generation:
                        return session
                    self._open -= 1
                if self._open < self._max_sessions:
                    self._open += 1
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._cond.wait(remaining):
                    raise HsmUnavailableError(
                        f"all {self._max_sessions} sessions to token {self.info.label!r} are "
                        f"busy for {self.acquire_timeout:.0f}s",
                        hint="raise the token's maxSessions or lower the operator's concurrency",
                    )
        try:
            return self._open_session()
        except BaseException:
            with self._cond:
                self._open -= 1
                self._cond.notify()
            raise

    def _release(self, session: TokenSession, *, broken: bool) -> None:
        if broken:
            self._close_quietly(session)
        with self._cond:
            if broken:
                self._open -= 1
            else:
                self._idle.append(session)
            self._cond.notify()

    @contextmanager
    def _borrowed(self, prefer: tuple[bytes, str] | None = None) -> Iterator[TokenSession]:
        session = self._acquire(prefer)
        broken = True
        try:
            yield session
            broken = False
        except HsmError:
            broken = False  # our own refusals leave the session healthy
            raise
        finally:
            self._release(session, broken=broken)

    def call(
        self,
        kind: CallKind,
        action: str,
        operation: Callable[[TokenSession], T],
        prefer: tuple[bytes, str] | None = None,
    ) -> T:
        """Run `operation` in a pooled session; a dead session or device is re-opened (and the
        module re-initialised) once before the error reaches the caller as an `HsmError`.
        `action` words error messages; `kind` is what the observer is told."""
        started = time.perf_counter()
        try:
            result = self._call_with_recovery(action, operation, prefer)
        except HsmError as error:
            self._report(kind, time.perf_counter() - started, error)
            raise
        self._report(kind, time.perf_counter() - started, None)
        return result

    def _report(self, kind: CallKind, seconds: float, error: HsmError | None) -> None:
        if self._observer is None:
            return
        try:
            self._observer.hsm_call(self.name, kind, seconds, error)
        except Exception:
            # Metrics are never worth a failed signature; one log line is enough to notice.
            if not self._observer_failed:
                self._observer_failed = True
                _log.debug("token observer failed; further failures go unlogged", exc_info=True)

    def _call_with_recovery(
        self,
        action: str,
        operation: Callable[[TokenSession], T],
        prefer: tuple[bytes, str] | None = None,
    ) -> T:
        last: Exception | None = None
        for _attempt in range(2):
            generation = self.module.generation
            try:
                with self._borrowed(prefer) as session, self.module.lock:
                    result = operation(session)
            except _TokenVanishedError as error:
                last = error
                self._reset_after_module_failure(generation)
            except pkcs11.PKCS11Error as error:
                last = error
                if isinstance(error, p11e.UserNotLoggedIn):
                    with self._login_lock:
                        self._logged_in_generation = -1
                if is_dead_module(error):
                    self._reset_after_module_failure(generation)
                elif not is_dead_session(error):
                    break
            else:
                self.module.recovering = False
                return result
        assert last is not None
        raise translate(last, action) from last

    def _write(self, kind: CallKind, action: str, operation: Callable[[TokenSession], T]) -> T:
        def exclusively(session: TokenSession) -> T:
            # Taken with a session in hand: a writer that waited for a session while holding
            # the lock would wait on searches that wait on it.
            with self._store_lock.writing():
                return operation(session)

        return self.call(kind, action, exclusively)

    def _reset_after_module_failure(self, generation: int) -> None:
        # Still down: the next attempt fails and reports it.
        with contextlib.suppress(HsmError):
            self.module.reinitialize(generation)
        with self._cond:
            stale = [s for s in self._idle if s.generation != self.module.generation]
            self._idle = [s for s in self._idle if s.generation == self.module.generation]
            self._open -= len(stale)

    def close(self) -> None:
        with self._cond:
            idle, self._idle = self._idle, []
            self._open -= len(idle)
        for session in idle:
            self._close_quietly(session)

    # -- operations -------------------------------------------------------------------------

    def key_uri(self, key: KeyRef) -> Pkcs11Uri:
        """The URI a consumer hands to its own PKCS#11 stack: token and key, never a PIN."""
        return Pkcs11Uri.build(
            token=self.info.label,
            manufacturer=self.info.manufacturer,
            serial=self.info.serial,
            model=self.info.model,
            object=key.label,
            type="private",
            id=key.id,
        )

    def mechanisms(self) -> set[pkcs11.Mechanism]:
        try:
            slot, _token, _generation = self._slot_and_token()
            with self.module.lock:
                return set(slot.get_mechanisms())
        except pkcs11.PKCS11Error as error:
            raise translate(error, "listing mechanisms") from error

    def generate_key(
        self, spec: KeySpec, *, id: bytes, label: str, check_unique: bool = True
    ) -> KeyRef:
        """`check_unique=False` skips looking for objects that already carry the id or label:
        for a caller that knows there are none (a C_FindObjects is O(objects) on SoftHSM)."""
        return self._write(
            "generate",
            f"generating a {spec} key",
            lambda s: s.generate_key(spec, id=id, label=label, check_unique=check_unique),
        )

    def find_key(self, *, id: bytes | None = None, label: str | None = None) -> KeyRef:
        return self.call("find", "looking up a key", lambda s: s.find_key(id=id, label=label))

    def list_keys(self) -> list[KeyRef]:
        return self.call("list", "listing keys", lambda s: s.list_keys())

    def delete_key(self, *, id: bytes | None = None, label: str | None = None) -> int:
        return self._write("delete", "deleting a key", lambda s: s.delete_key(id=id, label=label))

    def key_attributes(self, key: KeyRef) -> dict[str, bool]:
        return self.call(
            "attributes", "reading key attributes", lambda s: s.private_key_attributes(key)
        )

    def sign(
        self,
        key: KeyRef,
        data: bytes,
        *,
        hash_name: str | None,
        prehashed: bool = False,
        padding: Padding = Padding.PKCS1V15,
        salt_length: int | None = None,
    ) -> bytes:
        """Sign `data` (or a digest of it, `prehashed`) with the portable mechanisms; the
        result is what X.509 and TLS expect (DER for ECDSA)."""
        request = signing.prepare(
            key.spec.algorithm,
            data,
            hash_name=hash_name,
            prehashed=prehashed,
            padding=padding,
            salt_length=salt_length,
        )
        raw = self.call(
            "sign",
            f"signing with key {key.label!r}",
            lambda s: s.sign(key, request),
            prefer=(key.id, key.label),
        )
        return signing.finish(key.spec.algorithm, raw)

    def store_certificate(self, der: bytes, *, id: bytes, label: str, subject: bytes) -> None:
        self._write(
            "store",
            "storing a certificate",
            lambda s: s.store_certificate(der, id=id, label=label, subject=subject),
        )

    def find_certificates(
        self, *, id: bytes | None = None, label: str | None = None
    ) -> list[CertificateObject]:
        return self.call(
            "read", "reading certificates", lambda s: s.find_certificates(id=id, label=label)
        )

    def delete_certificates(self, *, id: bytes | None = None, label: str | None = None) -> int:
        return self._write(
            "delete", "deleting certificates", lambda s: s.delete_certificates(id=id, label=label)
        )
