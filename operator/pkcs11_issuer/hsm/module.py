"""Loading PKCS#11 modules: only those the operator's configuration allowlists, and so that
several threads may call into them at once.

python-pkcs11 initialises a module with `C_Initialize(NULL)`, which tells it that no two
threads will call it concurrently; SoftHSM then switches its own locking off. We initialise
the module ourselves with CKF_OS_LOCKING_OK first, so that the module locks for itself and
concurrent sessions stay safe without a global lock. A module that cannot lock for itself
(CKR_CANT_LOCK) is initialised the old way and every call into it is serialised by `Module.lock`.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pkcs11
import pkcs11._pkcs11 as _native

from pkcs11_issuer.hsm.errors import (
    ConfigurationError,
    HsmUnavailableError,
    ckr_name,
    pkcs11_error,
)

CKF_OS_LOCKING_OK = 0x2
CKR_OK = 0x0
CKR_CANT_LOCK = 0xA
CKR_CRYPTOKI_ALREADY_INITIALIZED = 0x191


class _InitializeArgs(ctypes.Structure):
    _fields_ = (
        ("CreateMutex", ctypes.c_void_p),
        ("DestroyMutex", ctypes.c_void_p),
        ("LockMutex", ctypes.c_void_p),
        ("UnlockMutex", ctypes.c_void_p),
        ("flags", ctypes.c_ulong),
        ("pReserved", ctypes.c_void_p),
    )


_CRV = ctypes.c_ulong
_ULONG = ctypes.c_ulong
_PTR = ctypes.c_void_p
CKU_USER = 1
CKR_BUFFER_TOO_SMALL = 0x150


class Attribute(ctypes.Structure):
    """CK_ATTRIBUTE."""

    _fields_ = (("type", _ULONG), ("pValue", _PTR), ("ulValueLen", _ULONG))


class _Mechanism(ctypes.Structure):
    _fields_ = (("mechanism", _ULONG), ("pParameter", _PTR), ("ulParameterLen", _ULONG))


class _PssParams(ctypes.Structure):
    _fields_ = (("hashAlg", _ULONG), ("mgf", _ULONG), ("sLen", _ULONG))


_P_ULONG = ctypes.POINTER(_ULONG)
_P_ATTRIBUTE = ctypes.POINTER(Attribute)
_P_MECHANISM = ctypes.POINTER(_Mechanism)
# The calls made here rather than through python-pkcs11, with their C prototypes. ctypes
# releases the GIL around each, as python-pkcs11 does.
_PROTOTYPES: dict[str, Any] = {
    "C_Initialize": ctypes.CFUNCTYPE(_CRV, _PTR),
    "C_Finalize": ctypes.CFUNCTYPE(_CRV, _PTR),
    "C_Login": ctypes.CFUNCTYPE(_CRV, _ULONG, _ULONG, ctypes.c_char_p, _ULONG),
    "C_GetAttributeValue": ctypes.CFUNCTYPE(_CRV, _ULONG, _ULONG, _P_ATTRIBUTE, _ULONG),
    "C_SignInit": ctypes.CFUNCTYPE(_CRV, _ULONG, _P_MECHANISM, _ULONG),
    "C_Sign": ctypes.CFUNCTYPE(_CRV, _ULONG, ctypes.c_char_p, _ULONG, _PTR, _P_ULONG),
    "C_GenerateKeyPair": ctypes.CFUNCTYPE(
        _CRV, _ULONG, _P_MECHANISM, _P_ATTRIBUTE, _ULONG, _P_ATTRIBUTE, _ULONG, _P_ULONG, _P_ULONG
    ),
}
# CK_FUNCTION_LIST up to C_GenerateKeyPair, in the order the standard fixes.
_FUNCTION_ORDER = [
    "C_Initialize",
    "C_Finalize",
    "C_GetInfo",
    "C_GetFunctionList",
    "C_GetSlotList",
    "C_GetSlotInfo",
    "C_GetTokenInfo",
    "C_GetMechanismList",
    "C_GetMechanismInfo",
    "C_InitToken",
    "C_InitPIN",
    "C_SetPIN",
    "C_OpenSession",
    "C_CloseSession",
    "C_CloseAllSessions",
    "C_GetSessionInfo",
    "C_GetOperationState",
    "C_SetOperationState",
    "C_Login",
    "C_Logout",
    "C_CreateObject",
    "C_CopyObject",
    "C_DestroyObject",
    "C_GetObjectSize",
    "C_GetAttributeValue",
    "C_SetAttributeValue",
    "C_FindObjectsInit",
    "C_FindObjects",
    "C_FindObjectsFinal",
    "C_EncryptInit",
    "C_Encrypt",
    "C_EncryptUpdate",
    "C_EncryptFinal",
    "C_DecryptInit",
    "C_Decrypt",
    "C_DecryptUpdate",
    "C_DecryptFinal",
    "C_DigestInit",
    "C_Digest",
    "C_DigestUpdate",
    "C_DigestKey",
    "C_DigestFinal",
    "C_SignInit",
    "C_Sign",
    "C_SignUpdate",
    "C_SignFinal",
    "C_SignRecoverInit",
    "C_SignRecover",
    "C_VerifyInit",
    "C_Verify",
    "C_VerifyUpdate",
    "C_VerifyFinal",
    "C_VerifyRecoverInit",
    "C_VerifyRecover",
    "C_DigestEncryptUpdate",
    "C_DecryptDigestUpdate",
    "C_SignEncryptUpdate",
    "C_DecryptVerifyUpdate",
    "C_GenerateKey",
    "C_GenerateKeyPair",
]


class _FunctionList(ctypes.Structure):
    _fields_ = (
        ("version_major", ctypes.c_ubyte),
        ("version_minor", ctypes.c_ubyte),
        *((name, _PROTOTYPES.get(name, _PTR)) for name in _FUNCTION_ORDER),
    )


# python-pkcs11's `lib` object starts with PyObject_HEAD (two words) and then its
# CK_FUNCTION_LIST pointer. python-pkcs11 is pinned to 0.10.x; `_function_list_of` checks the
# pointer before anything is called through it.
_FUNCTION_LIST_WORD = 2


def _function_list_of(lib: _native.lib) -> int:
    """The function list python-pkcs11 calls through. Modules such as p11-kit-client hand out a
    new instance on every C_GetFunctionList, so initialising and logging in must use this one."""
    address = (ctypes.c_void_p * (_FUNCTION_LIST_WORD + 1)).from_address(id(lib))[
        _FUNCTION_LIST_WORD
    ]
    ours = _call_get_function_list(lib.so)
    stable = ours == _call_get_function_list(lib.so)
    if address is None or (stable and address != ours):
        raise ConfigurationError(
            "cannot find python-pkcs11's function list; is python-pkcs11 0.10.x installed?"
        )
    head = _FunctionList.from_address(address)
    if head.version_major not in (2, 3):
        raise ConfigurationError(f"{lib.so}: unexpected CK_FUNCTION_LIST version")
    return address


def _call_get_function_list(path: str) -> int:
    library = ctypes.CDLL(path)  # dlopen refcounts: the same image python-pkcs11 loaded
    get_function_list = library.C_GetFunctionList
    get_function_list.restype = _CRV
    get_function_list.argtypes = (ctypes.POINTER(ctypes.c_void_p),)
    pointer = ctypes.c_void_p()
    rv = get_function_list(ctypes.byref(pointer))
    if rv != CKR_OK or pointer.value is None:
        raise ConfigurationError(f"C_GetFunctionList failed in {path}", ckr=f"CKR_{rv:#x}")
    return pointer.value


def _check(rv: int) -> None:
    if rv != CKR_OK:
        raise pkcs11_error(rv)


class NativeCalls:
    """The calls python-pkcs11 makes in a way we cannot use: C_Initialize (it passes NULL),
    C_Login (its sessions log the whole application out again when they close), and the hot
    path of issuance, where python-pkcs11 costs extra round trips: it asks C_Sign for the
    length first and reads four attributes of every object it hands out. Through a
    `p11-kit server` each of those is a message over the socket; on a network HSM, a packet.

    Failures raise the exception python-pkcs11 would raise for the same return value."""

    def __init__(self, function_list: int) -> None:
        self._functions = _FunctionList.from_address(function_list)

    def initialize(self, *, os_locking: bool) -> int:
        if not os_locking:
            return int(self._functions.C_Initialize(None))
        args = _InitializeArgs(None, None, None, None, CKF_OS_LOCKING_OK, None)
        return int(self._functions.C_Initialize(ctypes.cast(ctypes.byref(args), ctypes.c_void_p)))

    def finalize(self) -> int:
        return int(self._functions.C_Finalize(None))

    def login(self, session_handle: int, pin: bytes) -> int:
        return int(self._functions.C_Login(session_handle, CKU_USER, pin, len(pin)))

    def sign(
        self,
        session_handle: int,
        key_handle: int,
        *,
        mechanism: int,
        pss: tuple[int, int, int] | None,
        payload: bytes,
        expected_length: int,
    ) -> bytes:
        """C_SignInit and one C_Sign into a buffer of `expected_length` bytes (the key's
        signature size); a module that wants more is asked for the length after all."""
        if pss is None:
            mech = _Mechanism(mechanism, None, 0)
        else:
            params = _PssParams(*pss)
            mech = _Mechanism(mechanism, ctypes.addressof(params), ctypes.sizeof(params))
        _check(self._functions.C_SignInit(session_handle, ctypes.byref(mech), key_handle))
        length = _ULONG(expected_length)
        buffer = ctypes.create_string_buffer(expected_length)
        rv = self._functions.C_Sign(
            session_handle, payload, len(payload), buffer, ctypes.byref(length)
        )
        if rv == CKR_BUFFER_TOO_SMALL:
            # The operation is still active (PKCS#11 5.2): `length` now holds what it needs.
            buffer = ctypes.create_string_buffer(length.value)
            rv = self._functions.C_Sign(
                session_handle, payload, len(payload), buffer, ctypes.byref(length)
            )
        _check(rv)
        return buffer.raw[: length.value]

    def generate_key_pair(
        self,
        session_handle: int,
        mechanism: int,
        public_template: Sequence[tuple[int, bytes]],
        private_template: Sequence[tuple[int, bytes]],
    ) -> tuple[int, int]:
        """C_GenerateKeyPair; returns the (public, private) object handles. Template values
        are already encoded as the module expects them (`encode_bool`, `encode_ulong`)."""
        mech = _Mechanism(mechanism, None, 0)
        # The buffers must outlive the call: the arrays only point into them.
        public, _public_buffers = _template(public_template)
        private, _private_buffers = _template(private_template)
        public_handle, private_handle = _ULONG(), _ULONG()
        _check(
            self._functions.C_GenerateKeyPair(
                session_handle,
                ctypes.byref(mech),
                public,
                len(public_template),
                private,
                len(private_template),
                ctypes.byref(public_handle),
                ctypes.byref(private_handle),
            )
        )
        return public_handle.value, private_handle.value

    def attributes(
        self, session_handle: int, object_handle: int, wanted: Sequence[tuple[int, int]]
    ) -> list[bytes]:
        """One C_GetAttributeValue for (type, most bytes it can have) pairs; a value that does
        not fit after all is read again the two-call way."""
        buffers = [ctypes.create_string_buffer(size) for _type, size in wanted]
        template = (Attribute * len(wanted))(
            *(
                Attribute(type_, ctypes.addressof(buffer), size)
                for (type_, size), buffer in zip(wanted, buffers, strict=True)
            )
        )
        rv = self._functions.C_GetAttributeValue(
            session_handle, object_handle, template, len(wanted)
        )
        if rv == CKR_BUFFER_TOO_SMALL:
            for index, attribute in enumerate(template):
                attribute.pValue = None
                attribute.ulValueLen = 0
                buffers[index] = ctypes.create_string_buffer(0)
            _check(
                self._functions.C_GetAttributeValue(
                    session_handle, object_handle, template, len(wanted)
                )
            )
            for index, attribute in enumerate(template):
                buffers[index] = ctypes.create_string_buffer(attribute.ulValueLen)
                attribute.pValue = ctypes.addressof(buffers[index])
            rv = self._functions.C_GetAttributeValue(
                session_handle, object_handle, template, len(wanted)
            )
        _check(rv)
        return [
            buffer.raw[: attribute.ulValueLen]
            for buffer, attribute in zip(buffers, template, strict=True)
        ]


def encode_bool(value: bool) -> bytes:
    return b"\x01" if value else b"\x00"


def encode_ulong(value: int) -> bytes:
    return bytes(_ULONG(value))


def _template(values: Sequence[tuple[int, bytes]]) -> tuple[Any, list[Any]]:
    """A CK_ATTRIBUTE array, and the buffers it points into (kept alive by the caller)."""
    buffers = [ctypes.create_string_buffer(value, len(value)) for _type, value in values]
    array = (Attribute * len(values))(
        *(
            Attribute(type_, ctypes.addressof(buffer), len(value))
            for (type_, value), buffer in zip(values, buffers, strict=True)
        )
    )
    return array, buffers


class _ThreadSafeLib(_native.lib):
    """python-pkcs11's `lib` whose `initialize` asks the module to lock for itself."""

    native: NativeCalls
    os_locking: bool

    def initialize(self) -> None:
        self.native = NativeCalls(_function_list_of(self))
        rv = self.native.initialize(os_locking=True)
        self.os_locking = rv != CKR_CANT_LOCK
        if not self.os_locking:
            rv = self.native.initialize(os_locking=False)
        if rv not in (CKR_OK, CKR_CRYPTOKI_ALREADY_INITIALIZED):
            raise HsmUnavailableError(f"C_Initialize failed for {self.so}", ckr=f"CKR_{rv:#x}")


class Module:
    """One loaded PKCS#11 module. `generation` changes each time it is re-initialised, so that
    sessions and object handles from before are known to be stale."""

    def __init__(self, name: str, path: str) -> None:
        self.name = name
        self.path = path
        self.generation = 0
        # Set while the module has been re-initialised after a failure and nothing has
        # succeeded since: an empty token list then means "unreachable", not "no such token".
        self.recovering = False
        self._reinit_lock = threading.Lock()
        try:
            self._lib = _ThreadSafeLib(path)
        except OSError as error:
            raise ConfigurationError(f"cannot load PKCS#11 module {path}: {error}") from error
        except pkcs11.PKCS11Error as error:
            raise HsmUnavailableError(
                f"cannot initialise PKCS#11 module {path}: {error}", ckr=ckr_name(error)
            ) from error
        # Serialises every call when the module cannot lock for itself; otherwise a no-op.
        self.lock: contextlib.AbstractContextManager[object] = (
            contextlib.nullcontext() if self._lib.os_locking else threading.RLock()
        )

    @property
    def lib(self) -> _native.lib:
        return self._lib

    @property
    def native(self) -> NativeCalls:
        return self._lib.native

    @property
    def thread_safe(self) -> bool:
        return bool(self._lib.os_locking)

    @property
    def manufacturer(self) -> str:
        return str(self._lib.manufacturer_id)

    @property
    def description(self) -> str:
        return str(self._lib.library_description)

    @property
    def version(self) -> tuple[int, int]:
        major, minor = self._lib.library_version
        return int(major), int(minor)

    def slots(self) -> list[pkcs11.Slot]:
        with self.lock:
            return list(self._lib.get_slots(token_present=True))

    def login(self, session_handle: int, pin: bytes) -> int:
        with self.lock:
            return self._lib.native.login(session_handle, pin)

    def reinitialize(self, seen_generation: int) -> None:
        """Finalise and initialise again, once per failure however many threads saw it."""
        with self._reinit_lock:
            if self.generation != seen_generation:
                return
            self._lib.native.finalize()
            rv = self._lib.native.initialize(os_locking=self._lib.os_locking)
            self.generation += 1
            self.recovering = True
            if rv not in (CKR_OK, CKR_CRYPTOKI_ALREADY_INITIALIZED):
                raise HsmUnavailableError(
                    f"C_Initialize failed for {self.path}",
                    ckr=f"CKR_{rv:#x}",
                    hint="transient; it is retried with backoff",
                )


class ModuleAllowlist:
    """The modules the operator may load: name -> absolute path, from its own configuration.

    A path that a custom resource names is only accepted when it is one of these paths, so
    nobody who can create an Issuer can make the operator load code of their choosing.
    """

    def __init__(self, modules: Mapping[str, str | os.PathLike[str]]) -> None:
        self._paths: dict[str, str] = {}
        for name, path in modules.items():
            text = os.fspath(path)
            if not os.path.isabs(text):
                raise ConfigurationError(f"module {name!r}: path {text!r} must be absolute")
            self._paths[name] = text
        self._loaded: dict[str, Module] = {}
        self._lock = threading.Lock()

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def path_of(self, name: str) -> str:
        try:
            return self._paths[name]
        except KeyError:
            allowed = ", ".join(sorted(self._paths)) or "none"
            raise ConfigurationError(
                f"module {name!r} is not in the operator's module allowlist (allowed: {allowed})",
                hint="add it under `modules` in the operator configuration",
            ) from None

    def name_for_path(self, path: str) -> str:
        """The allowlisted name of `path`, or an error: used for `module-path` in URIs."""
        wanted = os.path.realpath(path)
        for name, allowed in self._paths.items():
            if os.path.realpath(allowed) == wanted:
                return name
        raise ConfigurationError(
            f"module path {path!r} is not in the operator's module allowlist",
            hint="only modules listed in the operator configuration can be used",
        )

    def load(self, name: str) -> Module:
        path = self.path_of(name)
        if not Path(path).is_file():
            raise ConfigurationError(
                f"module {name!r}: file {path} does not exist",
                hint="install the vendor's PKCS#11 library or fix the path",
            )
        # Keyed by the real file: one image initialised once, whatever it is called.
        key = os.path.realpath(path)
        with self._lock:
            module = self._loaded.get(key)
            if module is None:
                module = Module(name, path)
                self._loaded[key] = module
            return module
