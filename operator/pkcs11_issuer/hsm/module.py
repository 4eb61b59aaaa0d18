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
from collections.abc import Iterator, Mapping
from pathlib import Path

import pkcs11
import pkcs11._pkcs11 as _native

from pkcs11_issuer.hsm.errors import ConfigurationError, HsmUnavailableError, ckr_name

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
_InitializeFn = ctypes.CFUNCTYPE(_CRV, ctypes.c_void_p)
_LoginFn = ctypes.CFUNCTYPE(_CRV, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_ulong)
CKU_USER = 1

# CK_FUNCTION_LIST up to C_Login, in the order the standard fixes.
_FUNCTIONS_BEFORE_LOGIN = (
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
)


class _FunctionListHead(ctypes.Structure):
    _fields_ = (
        ("version_major", ctypes.c_ubyte),
        ("version_minor", ctypes.c_ubyte),
        ("C_Initialize", _InitializeFn),
        ("C_Finalize", _InitializeFn),
        *((name, ctypes.c_void_p) for name in _FUNCTIONS_BEFORE_LOGIN),
        ("C_Login", _LoginFn),
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
    head = _FunctionListHead.from_address(address)
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


class _NativeCalls:
    """The calls python-pkcs11 makes in a way we cannot use: C_Initialize (it passes NULL) and
    C_Login (its sessions log the whole application out again when they close)."""

    def __init__(self, function_list: int) -> None:
        self._functions = _FunctionListHead.from_address(function_list)

    def initialize(self, *, os_locking: bool) -> int:
        if not os_locking:
            return int(self._functions.C_Initialize(None))
        args = _InitializeArgs(None, None, None, None, CKF_OS_LOCKING_OK, None)
        return int(self._functions.C_Initialize(ctypes.cast(ctypes.byref(args), ctypes.c_void_p)))

    def finalize(self) -> int:
        return int(self._functions.C_Finalize(None))

    def login(self, session_handle: int, pin: bytes) -> int:
        return int(self._functions.C_Login(session_handle, CKU_USER, pin, len(pin)))


class _ThreadSafeLib(_native.lib):
    """python-pkcs11's `lib` whose `initialize` asks the module to lock for itself."""

    native: _NativeCalls
    os_locking: bool

    def initialize(self) -> None:
        self.native = _NativeCalls(_function_list_of(self))
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
