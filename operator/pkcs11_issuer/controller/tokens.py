"""The configured tokens, each opened once per process and shared by every reconcile.

One `hsm.Token` per configured token is a must, not a nicety: login state belongs to the
process and the token, and the failed-login guard only works when every caller goes through
the same object. PINs come from the Secret (or file) the configuration names and are
re-read now and then, so fixing a wrong PIN in its Secret is picked up without a restart."""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor
from typing import Any

from pkcs11_issuer import hsm
from pkcs11_issuer.config import OperatorConfig, TokenConfig
from pkcs11_issuer.controller.problems import Problem
from pkcs11_issuer.hsm.token import TokenInfo

log = logging.getLogger(__name__)

ReadSecret = Callable[[str, str], Awaitable[Mapping[str, Any] | None]]

PIN_REFRESH_SECONDS = 30.0
REOPEN_AFTER_FAILURE_SECONDS = 5.0


class _Health:
    """Tells the controller when a token answers again after failing, so that what waits on
    it is retried at once instead of at the end of its backoff."""

    def __init__(self, observer: hsm.TokenObserver, on_recovered: Callable[[str], None]) -> None:
        self._observer = observer
        self._on_recovered = on_recovered
        self._failing: set[str] = set()

    def hsm_call(self, token: str, action: str, seconds: float, error: hsm.HsmError | None) -> None:
        self._observer.hsm_call(token, action, seconds, error)
        if isinstance(error, hsm.HsmUnavailableError):
            self._failing.add(token)
        elif error is None and token in self._failing:
            self._failing.discard(token)
            self._on_recovered(token)


class TokenRegistry:
    def __init__(
        self,
        config: OperatorConfig,
        *,
        read_secret: ReadSecret,
        executor: Executor,
        observer: hsm.TokenObserver,
        on_recovered: Callable[[str], None],
    ) -> None:
        self._config = config
        self._allowlist = hsm.ModuleAllowlist(config.modules)
        self._read_secret = read_secret
        self._executor = executor
        self._health = _Health(observer, on_recovered)
        self._on_recovered = on_recovered
        self._tokens: dict[str, hsm.Token] = {}
        self._failed_at: dict[str, tuple[float, BaseException]] = {}
        self._pin_read_at: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def _token_config(self, name: str) -> TokenConfig:
        token_config = self._config.token(name)
        if token_config is None:
            raise Problem("TokenNotFound", f"no token named {name!r} in the configuration")
        return token_config

    async def _run(self, function: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function)

    async def _open(self, token_config: TokenConfig) -> hsm.Token:
        failed = self._failed_at.get(token_config.name)
        if failed is not None and time.monotonic() - failed[0] < REOPEN_AFTER_FAILURE_SECONDS:
            raise failed[1]

        def open_token() -> hsm.Token:
            module = self._allowlist.load(token_config.module)
            return hsm.Token(
                module,
                hsm.TokenSelector.from_uri(token_config.uri),
                None,
                max_sessions=token_config.max_sessions,
                login_retry_interval=self._config.login_retry_interval,
                observer=self._health,
                name=token_config.name,
            )

        try:
            token: hsm.Token = await self._run(open_token)
        except hsm.HsmError as error:
            self._failed_at[token_config.name] = (time.monotonic(), error)
            log.warning("cannot open token %s: %s", token_config.name, error)
            raise
        self._failed_at.pop(token_config.name, None)
        if failed is not None:
            self._on_recovered(token_config.name)
        log.info("opened token %s (%s)", token_config.name, token.info.label)
        return token

    async def _pin(self, token_config: TokenConfig) -> hsm.Pin:
        source = token_config.pin
        if source.file is not None:
            try:
                return hsm.Pin.from_file(source.file)
            except (OSError, ValueError) as error:
                raise Problem(
                    "PinNotAvailable",
                    f"cannot read the PIN file of token {token_config.name!r} "
                    f"({source.file}): {type(error).__name__}",
                ) from error
        assert source.secret_name is not None and source.secret_namespace is not None
        where = f"Secret {source.secret_namespace}/{source.secret_name}"
        secret = await self._read_secret(source.secret_namespace, source.secret_name)
        if secret is None:
            raise Problem(
                "PinNotAvailable",
                f"the PIN of token {token_config.name!r} is read from {where}, which does "
                "not exist; create it with the PIN under key "
                f"{source.secret_key!r}",
            )
        encoded = (secret.get("data") or {}).get(source.secret_key)
        try:
            value = base64.b64decode(encoded or "", validate=True).decode().rstrip("\r\n")
            return hsm.Pin(value)
        except (binascii.Error, UnicodeDecodeError, ValueError) as error:
            raise Problem(
                "PinNotAvailable",
                f"{where} has no usable PIN under key {source.secret_key!r}",
            ) from error

    async def _opened(self, token_config: TokenConfig, *, with_pin: bool) -> hsm.Token:
        """The one Token object for this configured token (two would split the login state
        and the failed-login guard), opened on first use under a per-token lock."""
        name = token_config.name
        async with self._locks.setdefault(name, asyncio.Lock()):
            token = self._tokens.get(name)
            if token is None:
                token = self._tokens[name] = await self._open(token_config)
            now = time.monotonic()
            stale = now - self._pin_read_at.get(name, -PIN_REFRESH_SECONDS) >= PIN_REFRESH_SECONDS
            if with_pin and stale:
                token.set_pin(await self._pin(token_config))
                self._pin_read_at[name] = now
            return token

    async def token(self, name: str) -> hsm.Token:
        """The open token `name`, with its PIN current."""
        return await self._opened(self._token_config(name), with_pin=True)

    async def infos(self) -> dict[str, TokenInfo | None]:
        """Each configured token's identity, None for one that cannot be reached now."""
        infos: dict[str, TokenInfo | None] = {}
        for token_config in self._config.tokens:
            try:
                infos[token_config.name] = (await self._opened(token_config, with_pin=False)).info
            except hsm.HsmError:
                infos[token_config.name] = None
        return infos

    def sessions(self) -> dict[str, tuple[int, int]]:
        return {
            name: (token.sessions_open, token.sessions_in_use)
            for name, token in self._tokens.items()
        }

    def close(self) -> None:
        for token in self._tokens.values():
            token.close()
